#!/usr/bin/env python3
"""Relative L2 error of a bf16 3x3 convolution (128 channels in, 32 out,
random inputs) computed directly and by Winograd F(m x m, 3x3) for
m = 2, 3, 4, with the transformed input V and filters U rounded to bf16
(round to nearest even) and the products summed exactly, as
kernels/winograd.go does with m = 2. The transform matrices are built by
the Toom-Cook construction (points 0, 1, -1, 2, -2 as far as needed, and
infinity) and checked exact in float64 first.

  /usr/bin/python3 bench/kernels/winograd_error.py

Measured 2026-12-02: direct 2.4e-3, F(2x2) 4.0e-3 (as TestWinograd
measures the Go kernel), F(3x3) 1.5e-2, F(4x4) 2.7e-2: the larger tiles'
1.44x and 1.78x fewer multiplications cost 3.7x and 7x the error of the
tile kernels/winograd.go uses.
"""
import numpy as np


def bf16(a):
    b = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32).astype(float)


def toom_cook(m, r, pts):
    """A^T (m x n), G (n x r), B^T (n x n) of F(m, r) on the finite points
    pts (n - 1 of them) and infinity; B^T solved from the identity."""
    n = m + r - 1
    at, g = np.zeros((m, n)), np.zeros((n, r))
    for j, p in enumerate(pts):
        f = np.prod([p - q for q in pts if q != p])
        at[:, j] = [p ** i for i in range(m)]
        g[j] = [p ** i / f for i in range(r)]
    at[m - 1, n - 1] = g[n - 1, r - 1] = 1
    rows, rhs = [], []
    for k in range(r):
        gk = g[:, k]
        for l in range(n):
            for i in range(m):
                coef = np.zeros((n, n))
                coef[:, l] = at[i] * gk
                rows.append(coef.ravel())
                rhs.append(1.0 if l - k == i else 0.0)
    bt = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0].reshape(n, n)
    return bt, g, at


def direct(x, w, h):
    y = np.zeros((w.shape[0], h, h))
    for r in range(3):
        for s in range(3):
            y += np.einsum("kc,chw->khw", w[:, :, r, s], x[:, r:r + h, s:s + h])
    return y


def winograd(x, w, h, m, rnd):
    bt, g, at = toom_cook(m, 3, [0, 1, -1, 2, -2][: m + 1])
    u = rnd(np.einsum("ia,kcab,jb->kcij", g, w, g))
    y = np.zeros((w.shape[0], h, h))
    for ty in range(0, h, m):
        for tx in range(0, h, m):
            v = rnd(np.einsum("ia,cab,jb->cij", bt, x[:, ty:ty + m + 2, tx:tx + m + 2], bt))
            y[:, ty:ty + m, tx:tx + m] = np.einsum("ia,kab,jb->kij", at, np.einsum("kcij,cij->kij", u, v), at)
    return y


def main():
    rng = np.random.default_rng(0)
    c, k, h = 128, 32, 12  # 12: a multiple of 2, 3 and 4
    x = np.zeros((c, h + 2, h + 2))
    x[:, 1:-1, 1:-1] = rng.standard_normal((c, h, h))
    w = rng.standard_normal((k, c, 3, 3)) / np.sqrt(c * 9)
    ref = direct(x, w, h)
    rel = lambda y: np.linalg.norm(y - ref) / np.linalg.norm(ref)
    print("direct, bf16 operands: %.2e" % rel(direct(bf16(x), bf16(w), h)))
    for m in (2, 3, 4):
        exact = rel(winograd(x, w, h, m, lambda a: a))
        assert exact < 1e-12, (m, exact)
        print("F(%dx%d, 3x3), bf16 V and U: %.2e (float64: %.1e)" % (m, m, rel(winograd(x, w, h, m, bf16)), exact))


if __name__ == "__main__":
    main()
