#!/usr/bin/python3
"""PyTorch's figures for the same workload as bench/bench.c, printed as `key value` lines.

Run by bench/bench.c in the same session (so ratios compare like with like); needs Debian's python3-torch, which is
not a test dependency.  Usage: /usr/bin/python3 bench/pytorch_reference.py [--threads N] [--batches N]
"""
import argparse
import time

import torch
from torch import nn


def d2l_lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10))


def bn_lenet():
    """d2l's LeNet with batch normalization."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(), nn.Linear(256, 120), nn.BatchNorm1d(120), nn.Sigmoid(), nn.Linear(120, 84),
        nn.BatchNorm1d(84), nn.Sigmoid(), nn.Linear(84, 10))


def train_rate(net, x, y, batches, lr):
    """Training examples per second of SGD steps on one in-memory batch, after 5 warm-up steps."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    def train(n):
        for _ in range(n):
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()

    train(5)
    t = time.perf_counter()
    train(batches)
    return batches * x.shape[0] / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--latency-calls", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = d2l_lenet()
    x = torch.rand(128, 1, 28, 28)
    y = torch.randint(0, 10, (128,))
    print(f"train_examples_per_sec {train_rate(net, x, y, args.batches, 0.9):.1f}")
    bn = bn_lenet()
    bn.train()
    print(f"bn_train_examples_per_sec {train_rate(bn, x, y, args.batches, 0.1):.1f}")

    xb = torch.rand(1000, 1, 28, 28)
    with torch.no_grad():
        net(xb)
        t = time.perf_counter()
        for _ in range(10):
            net(xb)
        print(f"infer_images_per_sec {10 * 1000 / (time.perf_counter() - t):.1f}")
        x1 = torch.rand(1, 1, 28, 28)
        lat = []
        for _ in range(args.latency_calls):
            t = time.perf_counter()
            net(x1)
            lat.append(time.perf_counter() - t)
        lat.sort()
        print(f"latency_p50_us {lat[len(lat) // 2] * 1e6:.1f}")
        print(f"latency_p99_us {lat[int(len(lat) * 0.99)] * 1e6:.1f}")
    print(f"threads {torch.get_num_threads()}")
    print(f"version {torch.__version__}")


if __name__ == "__main__":
    main()
