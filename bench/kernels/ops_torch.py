#!/usr/bin/python3
"""PyTorch peer for kernels.BenchmarkGroupNormSiLU, BenchmarkAttention and
BenchmarkResBlock: GroupNorm(32 groups)+SiLU on (4, 128, 32, 32),
single-head attention softmax(q k^T / 16) v with B=4, T=256, D=256, and a
diffusers-style ResNet block (GroupNorm+SiLU, 3x3 conv, time-embedding
projection, GroupNorm+SiLU, 3x3 conv, residual), forward and backward
(autograd, gradients of every input and parameter), in milliseconds (best
of --repeat). Same thread and malloc settings as conv_torch.py.

    /usr/bin/python3 bench/kernels/ops_torch.py
"""
import argparse
import ctypes
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def best(fn, iters, repeat):
    for _ in range(3):
        fn()
    b = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        b = min(b, (time.perf_counter() - t0) / iters)
    return b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.randn(4, 128, 32, 32, requires_grad=True)
    g = torch.randn(128, requires_grad=True)
    b = torch.randn(128, requires_grad=True)
    dy = torch.randn(4, 128, 32, 32)

    def gn():
        return F.silu(F.group_norm(x, 32, g, b, 1e-6))

    with torch.no_grad():
        t = best(gn, args.iters, args.repeat)
    print(f"GroupNormSiLU fwd {t*1e3:.3f}")
    y = gn()
    t = best(lambda: torch.autograd.grad(y, [x, g, b], dy, retain_graph=True), args.iters, args.repeat)
    print(f"GroupNormSiLU bwd {t*1e3:.3f}")

    q, k, v = (torch.randn(4, 256, 256, requires_grad=True) for _ in range(3))
    do = torch.randn(4, 256, 256)

    def attn():
        return torch.softmax(q @ k.transpose(1, 2) / 16, dim=-1) @ v

    with torch.no_grad():
        t = best(attn, args.iters, args.repeat)
    print(f"Attention fwd {t*1e3:.3f}")
    o = attn()
    t = best(lambda: torch.autograd.grad(o, [q, k, v], do, retain_graph=True), args.iters, args.repeat)
    print(f"Attention bwd {t*1e3:.3f}")

    for name, n, ch, temb, groups in (("cifar", 4, 128, 512, 32), ("small", 16, 32, 128, 8)):
        blk = ResBlock(ch, temb, groups)
        x = torch.randn(n, ch, 32, 32, requires_grad=True)
        te = torch.randn(n, temb, requires_grad=True)
        dout = torch.randn(n, ch, 32, 32)
        with torch.no_grad():
            t = best(lambda: blk(x, te), max(2, args.iters // 4), args.repeat)
        print(f"ResBlock/{name} fwd {t*1e3:.3f}")
        params = [x, te] + list(blk.parameters())

        def step():
            out = blk(x, te)
            return torch.autograd.grad(out, params, dout)

        t = best(step, max(2, args.iters // 4), args.repeat)
        print(f"ResBlock/{name} fwd+bwd {t*1e3:.3f}")


class ResBlock(torch.nn.Module):
    """The block of kernels.BenchmarkResBlock (diffusers ResnetBlock2D)."""

    def __init__(self, ch, temb, groups):
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(groups, ch, eps=1e-6)
        self.conv1 = torch.nn.Conv2d(ch, ch, 3, padding=1)
        self.proj = torch.nn.Linear(temb, ch)
        self.norm2 = torch.nn.GroupNorm(groups, ch, eps=1e-6)
        self.conv2 = torch.nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


if __name__ == "__main__":
    main()
