#!/usr/bin/python3
"""d2l.ai's LeNet runs in PyTorch, for comparison with examples/d2l_lenet.c: Xavier-uniform weights, batch 128, 10
epochs, the training set reshuffled each epoch, test accuracy after each epoch in evaluation mode.

  --variant d2l  the LeNet chapter (train_ch6): Conv2d(6, k5, p2) Sigmoid AvgPool2d ... Linear(10), SGD lr 0.9
  --variant bn   the batch normalization chapter's BNLeNet: Conv2d(6, k5) BatchNorm2d Sigmoid AvgPool2d
                 Conv2d(16, k5) BatchNorm2d Sigmoid AvgPool2d Flatten Linear(120) BatchNorm1d Sigmoid
                 Linear(84) BatchNorm1d Sigmoid Linear(10), SGD lr 0.1 (d2l 1.0)

Usage: /usr/bin/python3 bench/d2l_pytorch_reference.py [SEED] [--variant d2l|bn] [--lr RATE] [--threads N] ...
(needs Debian's python3-torch and dataset-fashion-mnist; not the pyenv python3).  With seed 0 and the defaults it
prints the design reference: test acc 0.464 after epoch 1, 0.847 after 10 (1 thread).
"""
import argparse, gzip, time
import numpy as np, torch
from torch import nn

p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
p.add_argument('seed', nargs='?', type=int, default=None, help='seed (same as --seed; default 0)')
p.add_argument('--seed', dest='seed_opt', metavar='SEED', type=int, default=0)
p.add_argument('--variant', choices=['d2l', 'bn'], default='d2l')
p.add_argument('--lr', type=float, help='learning rate (default: 0.9 for d2l, 0.1 for bn with SGD; 1e-3 with Adam/AdamW)')
p.add_argument('--optimizer', choices=['sgd', 'adam', 'adamw'], default='sgd')
p.add_argument('--weight-decay', type=float, help="default 0, AdamW's 0.01")
p.add_argument('--dropout', type=float, default=0.0, help='nn.Dropout(P) after each hidden activation of the fully connected part')
p.add_argument('--epochs', type=int, default=10)
p.add_argument('--batch-size', type=int, default=128)
p.add_argument('--threads', type=int, default=1, help='torch.set_num_threads (default 1)')
p.add_argument('--data', default='/usr/share/datasets/fashion-mnist')
a = p.parse_args()
seed = a.seed if a.seed is not None else a.seed_opt
lr = a.lr if a.lr is not None else (1e-3 if a.optimizer != 'sgd' else 0.1 if a.variant == 'bn' else 0.9)
wd = a.weight_decay if a.weight_decay is not None else (0.01 if a.optimizer == 'adamw' else 0.0)
torch.set_num_threads(a.threads); torch.manual_seed(seed)

def imgs(f):
    with gzip.open(f'{a.data}/{f}') as fh: return torch.tensor(np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32) / 255)
def labs(f):
    with gzip.open(f'{a.data}/{f}') as fh: return torch.tensor(np.frombuffer(fh.read(), np.uint8, offset=8).astype(np.int64))
Xtr, ytr, Xte, yte = imgs('train-images-idx3-ubyte.gz'), labs('train-labels-idx1-ubyte.gz'), imgs('t10k-images-idx3-ubyte.gz'), labs('t10k-labels-idx1-ubyte.gz')

bn = a.variant == 'bn'
drop = (lambda: [nn.Dropout(a.dropout)]) if a.dropout > 0 else (lambda: [])
norm2d = (lambda c: [nn.BatchNorm2d(c)]) if bn else (lambda c: [])
norm1d = (lambda c: [nn.BatchNorm1d(c)]) if bn else (lambda c: [])
net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=0 if bn else 2), *norm2d(6), nn.Sigmoid(), nn.AvgPool2d(2, 2),
                    nn.Conv2d(6, 16, 5), *norm2d(16), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
                    nn.Linear(256 if bn else 400, 120), *norm1d(120), nn.Sigmoid(), *drop(),
                    nn.Linear(120, 84), *norm1d(84), nn.Sigmoid(), *drop(), nn.Linear(84, 10))
for m in net:  # d2l's init_weights / init_cnn
    if isinstance(m, (nn.Linear, nn.Conv2d)): nn.init.xavier_uniform_(m.weight)
if a.optimizer == 'sgd': opt = torch.optim.SGD(net.parameters(), lr=lr, weight_decay=wd)
elif a.optimizer == 'adam': opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
else: opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
loss = nn.CrossEntropyLoss()
n, bs = len(Xtr), a.batch_size
print(f'{a.variant} LeNet, {a.optimizer} lr {lr:g}, weight decay {wd:g}, dropout {a.dropout:g}, seed {seed}, '
      f'PyTorch {torch.__version__}, {a.threads} thread(s)', flush=True)
train_seconds = 0.0
for epoch in range(a.epochs):
    t0 = time.perf_counter()
    net.train(); perm = torch.randperm(n); tl = tc = 0
    for i in range(0, n, bs):
        idx = perm[i:i + bs]; opt.zero_grad(); out = net(Xtr[idx]); l = loss(out, ytr[idx]); l.backward(); opt.step()
        tl += l.item() * len(idx); tc += (out.argmax(1) == ytr[idx]).sum().item()
    train_seconds += time.perf_counter() - t0
    net.eval()
    with torch.no_grad(): acc = (net(Xte).argmax(1) == yte).float().mean().item()
    print(f"seed {seed} epoch {epoch + 1}: loss {tl / n:.3f}, train acc {tc / n:.3f}, test acc {acc:.3f}", flush=True)
print(f"loss {tl / n:.3f}, train acc {tc / n:.3f}, test acc {acc:.3f}")
print(f"{a.epochs * n / train_seconds:.1f} examples/sec on cpu ({a.threads} thread{'s' if a.threads != 1 else ''}), "
      f"{train_seconds:.1f} s of training")
