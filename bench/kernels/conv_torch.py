#!/usr/bin/python3
"""PyTorch peer for kernels.BenchmarkConv: the same convolution shapes,
forward, backward-data and backward-filter, reported in GFLOP/s
(2*N*K*C*R*S*OH*OW per pass).

PyTorch at its best setting on this machine (see DESIGN.md, Performance
method): 2 intra-op threads, OPENBLAS_NUM_THREADS=1 before torch loads, and
glibc malloc told to keep freed memory.

    /usr/bin/python3 bench/kernels/conv_torch.py [--iters 10] [--repeat 3]
"""
import argparse
import ctypes
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
libc = ctypes.CDLL("libc.so.6")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)

import torch  # noqa: E402

# name, N, C, HW, K, R, stride, (pad top, left, bottom, right); must match
# benchConvShapes in kernels/bench_test.go.
SHAPES = [
    ("cifar_c128_32x32_3x3", 4, 128, 32, 128, 3, 1, (1, 1, 1, 1)),
    ("cifar_c128to256_16x16_3x3", 4, 128, 16, 256, 3, 1, (1, 1, 1, 1)),
    ("cifar_c256_16x16_3x3", 4, 256, 16, 256, 3, 1, (1, 1, 1, 1)),
    ("cifar_c256_8x8_3x3", 4, 256, 8, 256, 3, 1, (1, 1, 1, 1)),
    ("cifar_c256_4x4_3x3", 4, 256, 4, 256, 3, 1, (1, 1, 1, 1)),
    ("cifar_c128_down_32to16", 4, 128, 32, 128, 3, 2, (1, 1, 1, 1)),
    ("cifar_c128to256_16x16_1x1", 4, 128, 16, 256, 1, 1, (0, 0, 0, 0)),
    ("small_c32_32x32_3x3", 16, 32, 32, 32, 3, 1, (1, 1, 1, 1)),
    ("small_c64_16x16_3x3", 16, 64, 16, 64, 3, 1, (1, 1, 1, 1)),
    ("small_c64_8x8_3x3", 16, 64, 8, 64, 3, 1, (1, 1, 1, 1)),
]


def timeit(fn, iters, repeat):
    """Best (least) mean time over repeat rounds of iters calls, after warm-up."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        best = min(best, (time.perf_counter() - t0) / iters)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mkldnn {torch.backends.mkldnn.is_available()}")
    print(f"{'shape':32s} {'pass':10s} {'ms':>8s} {'GFLOP/s':>8s}")
    with torch.no_grad():
        for name, n, c, hw, k, r, st, pad in SHAPES:
            x = torch.randn(n, c, hw, hw)
            w = torch.randn(k, c, r, r)
            b = torch.randn(k)
            pt, pl, pb, pr = pad
            if pt == pb and pl == pr:
                conv = lambda x=x, w=w, b=b, st=st, pt=pt: torch.nn.functional.conv2d(x, w, b, stride=st, padding=pt)
                xp, padding = x, [pt, pl]
            else:
                raise ValueError("asymmetric padding not benchmarked")
            y = conv()
            oh, ow = y.shape[2], y.shape[3]
            dy = torch.randn_like(y)
            flops = 2.0 * n * k * c * r * r * oh * ow
            cb = torch.ops.aten.convolution_backward

            def bwd_data(dy=dy, xp=xp, w=w, st=st, padding=padding):
                return cb(dy, xp, w, None, [st, st], padding, [1, 1], False, [0, 0], 1, [True, False, False])

            def bwd_filter(dy=dy, xp=xp, w=w, st=st, padding=padding):
                return cb(dy, xp, w, [w.shape[0]], [st, st], padding, [1, 1], False, [0, 0], 1, [False, True, True])

            for pname, fn in (("fwd", conv), ("bwd_data", bwd_data), ("bwd_filter", bwd_filter)):
                s = timeit(fn, args.iters, args.repeat)
                print(f"{name:32s} {pname:10s} {s*1e3:8.3f} {flops/s/1e9:8.1f}")


if __name__ == "__main__":
    main()
