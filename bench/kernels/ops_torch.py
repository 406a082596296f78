#!/usr/bin/python3
"""PyTorch peer for kernels.BenchmarkGroupNormSiLU and BenchmarkAttention:
GroupNorm(32 groups)+SiLU on (4, 128, 32, 32) and single-head attention
softmax(q k^T / 16) v with B=4, T=256, D=256, forward and backward
(autograd, gradients of every input), in milliseconds (best of --repeat).
Same thread and malloc settings as conv_torch.py.

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


if __name__ == "__main__":
    main()
