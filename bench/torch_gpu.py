#!/usr/bin/env python3
"""PyTorch eager peer for bench/gpu-check.sh (issue 6).

--ops      times the hot ops of the DDPM CIFAR-10 UNet at batch 128 with the
           same shapes as cuda/bench_test.go's BenchmarkGPU* (conv 3x3,
           GroupNorm+SiLU, attention, a tiny-kernel launch), each at PyTorch's
           best eager setting (cudnn.benchmark, convolution_backward,
           scaled_dot_product_attention).
--model C  times the whole UNet built from diffusers config C (a JSON file)
           with bench/unet_torch.py's definition: sampling images/s (batch B,
           S DDIM steps) and one training step (forward, MSE, backward,
           AdamW) in ms.

Prints one JSON object per line: {"name": ..., "ms": ...} (or "skip").
--precision tf32 (default, like the Go side's default) lets cuDNN and cuBLAS
use TF32; fp32 forbids it. Without CUDA every line is a skip.
"""
import argparse
import json
import math
import os
import sys
import time


def emit(**kw):
    print(json.dumps(kw), flush=True)


def timed(torch, fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def run_ops(torch, iters):
    F = torch.nn.functional
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)

    def rnd(*shape, grad=False):
        t = torch.randn(*shape, device=dev, generator=g) * 0.5
        return t.requires_grad_(grad)

    n, c, h, w = 128, 128, 32, 32
    x, wt, b = rnd(n, c, h, w), rnd(c, c, 3, 3), rnd(c)
    emit(name="Conv3x3Fwd", ms=timed(torch, lambda: F.conv2d(x, wt, b, padding=1), iters))
    dy = rnd(n, c, h, w)
    cb = torch.ops.aten.convolution_backward
    emit(name="Conv3x3Bwd", ms=timed(torch, lambda: cb(dy, x, wt, [c], [1, 1], [1, 1], [1, 1], False,
                                                        [0, 0], 1, [True, True, True]), iters))

    gm, bt = rnd(c), rnd(c)
    emit(name="GroupNormSiLUFwd", ms=timed(torch, lambda: F.silu(F.group_norm(x, 32, gm, bt, 1e-6)), iters))
    xg, gg, bg = rnd(n, c, h, w, grad=True), rnd(c, grad=True), rnd(c, grad=True)
    y = F.silu(F.group_norm(xg, 32, gg, bg, 1e-6))
    emit(name="GroupNormSiLUBwd", ms=timed(torch, lambda: torch.autograd.grad(y, (xg, gg, bg), dy, retain_graph=True), iters))

    B, T, D = 128, 256, 256
    q, k, v = rnd(B, 1, T, D), rnd(B, 1, T, D), rnd(B, 1, T, D)
    sdpa = getattr(F, "scaled_dot_product_attention", None)
    if sdpa is None:
        def sdpa(q, k, v):
            return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
    emit(name="AttentionFwd", ms=timed(torch, lambda: sdpa(q, k, v), iters))
    qg, kg, vg = rnd(B, 1, T, D, grad=True), rnd(B, 1, T, D, grad=True), rnd(B, 1, T, D, grad=True)
    o = sdpa(qg, kg, vg)
    do = rnd(B, 1, T, D)
    emit(name="AttentionBwd", ms=timed(torch, lambda: torch.autograd.grad(o, (qg, kg, vg), do, retain_graph=True), iters))

    tiny = rnd(256)
    emit(name="Launch", ms=timed(torch, lambda: F.silu(tiny), 200))


def load_unet(torch, config_path):
    """Builds the UNet from bench/unet_torch.py (written by the UNet/bench
    engineers); tries the constructor names it may export."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import unet_torch  # noqa: E402
    with open(config_path) as f:
        cfg = json.load(f)
    for name in ("build_model", "from_config", "model_from_config", "UNet2DModel", "UNet"):
        ctor = getattr(unet_torch, name, None)
        if ctor is None:
            continue
        for arg in (cfg, config_path):
            try:
                return ctor(arg)
            except TypeError:
                try:
                    return ctor(**cfg) if arg is cfg else None
                except TypeError:
                    continue
    raise RuntimeError("bench/unet_torch.py exports none of build_model/from_config/UNet2DModel(config)")


def call_model(model, x, t):
    out = model(x, t)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "sample"):
        out = out.sample
    return out


def run_model(torch, config_path, batch, steps, train_iters):
    try:
        model = load_unet(torch, config_path)
    except Exception as e:  # a missing or different unet_torch.py is a skip, not a failure
        emit(name="SampleDDIM", skip="unet_torch: %s" % e)
        emit(name="TrainStep", skip="unet_torch: %s" % e)
        return
    model = model.cuda()
    nparams = sum(p.numel() for p in model.parameters())
    emit(name="Params", value=nparams)
    with open(config_path) as f:
        cfg = json.load(f)
    ch, size = cfg.get("in_channels", 3), cfg.get("sample_size", 32)
    if isinstance(size, (list, tuple)):
        size = size[0]
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    ts = list(range(T - 1, -1, -T // steps))[:steps]

    def sample():
        x = torch.randn(batch, ch, size, size, device="cuda")
        with torch.no_grad():
            for i, t in enumerate(ts):
                a = float(ac[t])
                ap = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
                tt = torch.full((batch,), t, device="cuda", dtype=torch.long)
                eps = call_model(model, x, tt)
                x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
                x = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps
        return x

    model.eval()
    sample()  # warm-up (cudnn.benchmark picks algorithms)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    sample()
    torch.cuda.synchronize()
    el = time.perf_counter() - t0
    emit(name="SampleDDIM", ms=el * 1e3, images_per_s=batch / el, batch=batch, steps=steps)

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.randn(batch, ch, size, size, device="cuda")
    acd = ac.float().cuda()

    def step():
        t = torch.randint(0, T, (batch,), device="cuda")
        noise = torch.randn_like(x0)
        a = acd[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(call_model(model, xt, t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    emit(name="TrainStep", ms=timed(torch, step, train_iters, warmup=2), batch=batch)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", action="store_true")
    ap.add_argument("--model", metavar="CONFIG_JSON")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--train-iters", type=int, default=5)
    ap.add_argument("--precision", choices=["tf32", "fp32"], default="tf32")
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        emit(name="torch", skip="no torch: %s" % e)
        return 0
    if not torch.cuda.is_available():
        emit(name="torch", skip="torch %s has no CUDA device" % torch.__version__)
        return 0
    tf32 = args.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    emit(name="torch", version=torch.__version__, device=torch.cuda.get_device_name(0), precision=args.precision)
    if args.ops:
        run_ops(torch, args.iters)
    if args.model:
        run_model(torch, args.model, args.batch, args.steps, args.train_iters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
