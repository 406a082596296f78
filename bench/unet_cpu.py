#!/usr/bin/env python3
"""PyTorch CPU peer of `ddpm bench`: the same UNet (pytorch/unet2d.py's twin
of diffusers' UNet2DModel, bit-exact with diffusers, as a module from
pytorch/bench_gpu.py) at
PyTorch's best CPU settings from DESIGN.md: 2 threads, OPENBLAS_NUM_THREADS=1
before torch loads, and glibc malloc told to keep freed memory.

  unet_cpu.py --config CONFIG_JSON|ddpm-cifar10 --batch N --iters K [--train]

Prints one JSON line with the keys of `ddpm bench --json`.
"""
import ctypes
import os
import sys

os.environ["OPENBLAS_NUM_THREADS"] = "1"
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pytorch"))
import bench_gpu as torch_gpu  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = torch_gpu.read_config(a.config)
    model = torch_gpu.twin_module(torch, cfg)
    ch, size = cfg.get("in_channels", 3), cfg.get("sample_size", 32)
    x = torch.randn(a.batch, ch, size, size)
    t = torch.randint(0, 1000, (a.batch,))
    model.eval()

    def fwd():
        with torch.no_grad():
            torch_gpu.call_model(model, x, t)

    def times(fn, n):
        for _ in range(a.warmup):
            fn()
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(out)

    fm = times(fwd, a.iters)
    res = {"device": "cpu (torch %s, %d threads)" % (torch.__version__, a.threads), "batch": a.batch,
           "forward_ms_median": fm, "images_per_sec": a.batch * 1e3 / fm}
    if a.train:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        noise = torch.randn_like(x)

        def step():
            loss = torch.nn.functional.mse_loss(torch_gpu.call_model(model, x, t), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        tm = times(step, max(2, a.iters // 2))
        res.update(train_step_ms_median=tm, train_images_per_sec=a.batch * 1e3 / tm)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
