#!/usr/bin/python3
"""d2l.ai's LeNet run (train_ch6, lr 0.9, batch 128, 10 epochs, Xavier init) in PyTorch, for comparison with
examples/d2l_lenet.c.  Usage: /usr/bin/python3 bench/d2l_pytorch_reference.py SEED  (needs Debian's python3-torch and
dataset-fashion-mnist).  With seed 0 it prints the design reference: test acc 0.464 after epoch 1, 0.847 after 10.
"""
import gzip, sys, numpy as np, torch
from torch import nn
seed = int(sys.argv[1]); torch.set_num_threads(1); torch.manual_seed(seed)
D = '/usr/share/datasets/fashion-mnist/'
def imgs(f):
    with gzip.open(D + f) as fh: return torch.tensor(np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32) / 255)
def labs(f):
    with gzip.open(D + f) as fh: return torch.tensor(np.frombuffer(fh.read(), np.uint8, offset=8).astype(np.int64))
Xtr, ytr, Xte, yte = imgs('train-images-idx3-ubyte.gz'), labs('train-labels-idx1-ubyte.gz'), imgs('t10k-images-idx3-ubyte.gz'), labs('t10k-labels-idx1-ubyte.gz')
net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
                    nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10))
for m in net:
    if isinstance(m, (nn.Linear, nn.Conv2d)): nn.init.xavier_uniform_(m.weight)
opt = torch.optim.SGD(net.parameters(), lr=0.9); loss = nn.CrossEntropyLoss()
for epoch in range(10):
    perm = torch.randperm(60000); tl = tc = 0
    for i in range(0, 60000, 128):
        idx = perm[i:i + 128]; opt.zero_grad(); out = net(Xtr[idx]); l = loss(out, ytr[idx]); l.backward(); opt.step()
        tl += l.item() * len(idx); tc += (out.argmax(1) == ytr[idx]).sum().item()
    with torch.no_grad(): acc = (net(Xte).argmax(1) == yte).float().mean().item()
    print(f"seed {seed} epoch {epoch + 1}: loss {tl / 60000:.3f}, train acc {tc / 60000:.3f}, test acc {acc:.3f}", flush=True)
