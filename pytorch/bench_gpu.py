#!/usr/bin/env python3
"""PyTorch eager peer of bench/gpu-check.sh: the same ops and the same
UNet as the Go side, timed at PyTorch's best eager setting on the same
GPU (torch.backends.cudnn.benchmark, TF32 on for convolutions and
matmuls, bf16 through torch.autocast).

--ops      the hot ops of the DDPM CIFAR-10 UNet at batch 128, the shapes
           of cuda/bench_test.go's BenchmarkGPU* (3x3 convolution forward
           and backward, GroupNorm+SiLU, single-head attention, a tiny
           kernel's launch).
--model C  the whole UNet of config C (the preset ddpm-cifar10, or a
           diffusers config.json) as pytorch/unet2d.py's twin of diffusers'
           UNet2DModel (bit-exact with diffusers 0.21.4), random weights:
           sampling images/s (batch B, S DDIM steps, eta 0) in each of
           --precisions (tf32, fp32, bf16), and one training step in ms
           (forward, MSE against the noise, backward, gradient clipping to
           norm 1, AdamW) in TF32, as `ddpm bench --train` times it.
--cpu-smoke  the --model path on the CPU at batch 2, 2 steps (the dry run).

Prints one JSON object per line: {"name": ..., "ms": ...}, or a "skip"
with the reason. Without CUDA every timing line is a skip.
"""
import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def emit(**kw):
    print(json.dumps(kw), flush=True)


def timed(torch, fn, iters, warmup=3, device="cuda"):
    """Mean ms per call of fn over iters calls after warmup calls."""
    for _ in range(warmup):
        fn()
    if device != "cuda":
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) * 1e3 / iters
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
    """The shapes of cuda/bench_test.go, batch 128."""
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


# google/ddpm-cifar10-32's UNet2DModel config (35,746,307 parameters), as
# unet.Preset("ddpm-cifar10") in Go.
DDPM_CIFAR10 = {
    "in_channels": 3, "out_channels": 3, "sample_size": 32, "block_out_channels": [128, 256, 256, 256],
    "layers_per_block": 2, "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 32,
    "norm_eps": 1e-6, "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
    "attention_head_dim": None, "act_fn": "silu", "center_input_sample": False, "dropout": 0.0,
}


def read_config(name_or_path):
    """The preset ddpm-cifar10, or a diffusers config.json."""
    if name_or_path == "ddpm-cifar10":
        return dict(DDPM_CIFAR10)
    with open(name_or_path) as f:
        return json.load(f)


def twin_module(torch, cfg, seed=0):
    """pytorch/unet2d.py's UNet2D (random weights from seed) as a
    torch.nn.Module whose parameters are the twin's tensors, for training
    and .to(device); forward(x, t) is the twin's functional forward pass."""
    import unet2d

    twin = unet2d.UNet2D(cfg, seed=seed)

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.names = sorted(twin.params)
            self.weights = torch.nn.ParameterList([torch.nn.Parameter(twin.params[k].clone()) for k in self.names])

        def forward(self, x, t):
            p = unet2d._Params(dict(zip(self.names, self.weights)))
            if x.is_cuda:  # the twin makes its frequency table with torch.arange (torch >= 2: device context)
                with torch.device(x.device):
                    return twin._forward(p, x, t, None)
            return twin._forward(p, x, t, None)

    m = Twin()
    m.config = twin.config
    return m


def call_model(model, x, t):
    return model(x, t)


def ddim_timesteps(T, steps):
    """diffusers' leading spacing, as `ddpm sample --sampler ddim`."""
    return [i * (T // steps) for i in range(steps)][::-1]


def run_model(torch, config_path, batch, steps, train_iters, precisions, dev="cuda"):
    cfg = read_config(config_path)
    try:
        model = twin_module(torch, cfg)
    except Exception as e:  # noqa: BLE001 (reported, not raised)
        for p in precisions:
            emit(name="SampleDDIM", precision=p, skip="model: %s" % e)
        emit(name="TrainStep", precision="tf32", skip="model: %s" % e)
        return
    model = model.to(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    emit(name="Params", value=sum(p.numel() for p in model.parameters()), source="pytorch/unet2d.py twin")
    ch, size = cfg.get("in_channels", 3), cfg.get("sample_size", 32)
    if isinstance(size, (list, tuple)):
        size = size[0]
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    ts = ddim_timesteps(T, steps)

    def sample(autocast_dtype):
        x = torch.randn(batch, ch, size, size, device=dev)
        with torch.no_grad():
            for i, t in enumerate(ts):
                a = float(ac[t])
                ap = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
                tt = torch.full((batch,), t, device=dev, dtype=torch.long)
                if autocast_dtype is not None:
                    with torch.autocast(device_type=dev, dtype=autocast_dtype):
                        eps = call_model(model, x, tt).float()
                else:
                    eps = call_model(model, x, tt)
                x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
                x = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps
        return x

    model.eval()
    for p in precisions:
        tf32 = p != "fp32"
        if dev == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        ad = torch.bfloat16 if p == "bf16" else None
        if ad is not None and dev != "cuda":
            emit(name="SampleDDIM", precision=p, skip="bf16 autocast timed on the GPU only")
            continue
        sample(ad)  # warm-up: cudnn.benchmark picks algorithms
        sync()
        t0 = time.perf_counter()
        sample(ad)
        sync()
        el = time.perf_counter() - t0
        emit(name="SampleDDIM", precision=p, ms=el * 1e3, images_per_s=batch / el, batch=batch, steps=steps)

    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    x0 = torch.randn(batch, ch, size, size, device=dev)
    acd = ac.float().to(dev)

    def step():
        t = torch.randint(0, T, (batch,), device=dev)
        noise = torch.randn_like(x0)
        a = acd[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(call_model(model, xt, t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    emit(name="TrainStep", precision="tf32" if dev == "cuda" else "fp32", ms=timed(torch, step, train_iters, warmup=2, device=dev),
         batch=batch)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", action="store_true")
    ap.add_argument("--model", metavar="CONFIG", help="a diffusers config.json or the preset ddpm-cifar10")
    ap.add_argument("--cpu-smoke", action="store_true", help="the --model path on the CPU at batch 2, 2 steps")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--train-iters", type=int, default=5)
    ap.add_argument("--precisions", default="tf32,bf16", help="sampling precisions: tf32, fp32, bf16 (comma-separated)")
    args = ap.parse_args()
    precisions = [p for p in args.precisions.split(",") if p]
    for p in precisions:
        if p not in ("tf32", "fp32", "bf16"):
            ap.error("--precisions: %s: allowed tf32, fp32, bf16" % p)
    try:
        import torch
    except ImportError as e:
        emit(name="torch", skip="no torch: %s" % e)
        return 0
    if args.cpu_smoke:
        torch.manual_seed(0)
        emit(name="torch", version=torch.__version__, device="cpu (smoke test)")
        run_model(torch, args.model or "ddpm-cifar10", 2, 2, 1, ["fp32"], dev="cpu")
        return 0
    if not torch.cuda.is_available():
        emit(name="torch", skip="torch %s has no CUDA device" % torch.__version__)
        return 0
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    emit(name="torch", version=torch.__version__, device=torch.cuda.get_device_name(0), precision="tf32")
    if args.ops:
        run_ops(torch, args.iters)
    if args.model:
        run_model(torch, args.model, args.batch, args.steps, args.train_iters, precisions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
