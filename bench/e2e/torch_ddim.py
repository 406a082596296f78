#!/usr/bin/env python3
"""The PyTorch peer of `ddpm sample --sampler ddim`: diffusers' DDIMPipeline
loop written out (diffusers is not in Debian) on pytorch/unet2d.py's twin
of UNet2DModel: leading spacing, eta 0, x_0 clipped to [-1, 1], then the
images written as one PNG grid. Run it under a timer for process start to
PNG.

  torch_ddim.py FOLDER --n N --steps S --out FILE.png [--threads 2]
  torch_ddim.py --make FOLDER   # a diffusers folder: DDPM CIFAR-10 config, random weights (seed 0)

Settings as bench/unet_cpu.py: 2 threads, OPENBLAS_NUM_THREADS=1 before
torch loads, glibc malloc told to keep freed memory.
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
import math  # noqa: E402
import struct  # noqa: E402
import zlib  # noqa: E402

import torch  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "pytorch"))
import bench_gpu  # noqa: E402
import unet2d  # noqa: E402


def make(folder):
    cfg = bench_gpu.read_config("ddpm-cifar10")
    twin = unet2d.UNet2D(cfg, seed=0)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(dict(cfg, _class_name="UNet2DModel"), f)
    unet2d.write_safetensors(os.path.join(folder, "diffusion_pytorch_model.safetensors"), twin.params)


def write_png(path, x):
    """x: (N, C, H, W) in [-1, 1], written as a grid of ceil(sqrt(N)) columns."""
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    img = torch.zeros(rows * h, cols * w, c, dtype=torch.uint8)
    u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    for i in range(n):
        r, q = divmod(i, cols)
        img[r * h:(r + 1) * h, q * w:(q + 1) * w] = u8[i]
    raw = b"".join(b"\0" + img[y].numpy().tobytes() for y in range(img.shape[0]))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    color = {1: 0, 3: 2}[c]
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", img.shape[1], img.shape[0], 8, color, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--make", action="store_true")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="samples.png")
    a = ap.parse_args()
    if a.make:
        make(a.folder)
        return
    torch.set_num_threads(a.threads)
    model = unet2d.load(a.folder)
    cfg = model.config
    ch, size = cfg.get("in_channels", 3), cfg.get("sample_size", 32)
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    ts = bench_gpu.ddim_timesteps(T, a.steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.n, ch, size, size, generator=g)
    with torch.no_grad():
        for i, t in enumerate(ts):
            at = float(ac[t])
            ap_ = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            eps = model(x, torch.full((a.n,), t, dtype=torch.long))
            x0 = ((x - math.sqrt(1 - at) * eps) / math.sqrt(at)).clamp(-1, 1)
            eps = (x - math.sqrt(at) * x0) / math.sqrt(1 - at)
            x = math.sqrt(ap_) * x0 + math.sqrt(1 - ap_) * eps
    write_png(a.out, x)


if __name__ == "__main__":
    main()
