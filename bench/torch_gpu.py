#!/usr/bin/env python3
"""PyTorch eager peer for bench/gpu-check.sh (issue 6).

--ops      times the hot ops of the DDPM CIFAR-10 UNet at batch 128 with the
           same shapes as cuda/bench_test.go's BenchmarkGPU* (conv 3x3,
           GroupNorm+SiLU, attention, a tiny-kernel launch), each at PyTorch's
           best eager setting (cudnn.benchmark, convolution_backward,
           scaled_dot_product_attention).
--model C  times the whole UNet built from diffusers config C (a JSON file)
           with bench/unet_torch.py's definition when present, else this
           file's lab_unet (the same network as cuda/dev's lab UNet):
           sampling images/s (batch B, S DDIM steps) and one training step
           (forward, MSE, backward, AdamW) in ms.
--check-fixture DIR  checks lab_unet against a diffusers folder with
           x.npy, timesteps.npy, out.npy (relative L2 < 1e-4).

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


def timed(torch, fn, iters, warmup=3, device="cuda"):
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


def lab_unet(torch, cfg):
    """A compact PyTorch UNet2DModel (diffusers 0.21 semantics, parameter
    names equal to diffusers' state_dict keys) for configs with
    DownBlock2D/AttnDownBlock2D, UpBlock2D/AttnUpBlock2D, one-head
    attention, positional time embedding (flip_sin_to_cos false, freq_shift
    1). The same network as cuda/dev's lab UNet; used when
    bench/unet_torch.py is absent."""
    nn, F = torch.nn, torch.nn.functional
    chans = cfg["block_out_channels"]
    layers, groups, eps = cfg["layers_per_block"], cfg["norm_num_groups"], cfg["norm_eps"]
    attn_down = [t == "AttnDownBlock2D" for t in cfg["down_block_types"]]
    down_pad = cfg.get("downsample_padding", 1)
    cin = cfg.get("in_channels", 3)
    cout = cfg.get("out_channels", cin)
    temb = 4 * chans[0]

    class Resnet(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.norm1 = nn.GroupNorm(groups, i, eps=eps)
            self.conv1 = nn.Conv2d(i, o, 3, padding=1)
            self.time_emb_proj = nn.Linear(temb, o)
            self.norm2 = nn.GroupNorm(groups, o, eps=eps)
            self.conv2 = nn.Conv2d(o, o, 3, padding=1)
            self.conv_shortcut = nn.Conv2d(i, o, 1) if i != o else None

        def forward(self, x, st):
            h = self.conv1(F.silu(self.norm1(x)))
            h = h + self.time_emb_proj(st)[:, :, None, None]
            h = self.conv2(F.silu(self.norm2(h)))
            return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h

    class Attn(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.group_norm = nn.GroupNorm(groups, c, eps=eps)
            self.to_q, self.to_k, self.to_v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
            self.to_out = nn.ModuleList([nn.Linear(c, c)])

        def forward(self, x):
            b, c, h, w = x.shape
            t = self.group_norm(x).view(b, c, h * w).transpose(1, 2)
            q, k, v = self.to_q(t)[:, None], self.to_k(t)[:, None], self.to_v(t)[:, None]
            sdpa = getattr(F, "scaled_dot_product_attention", None)
            if sdpa is not None:
                o = sdpa(q, k, v)
            else:
                o = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c), -1) @ v
            o = self.to_out[0](o[:, 0])
            return o.transpose(1, 2).reshape(b, c, h, w) + x

    class Down(nn.Module):
        def __init__(self, i, o, attn, last):
            super().__init__()
            self.resnets = nn.ModuleList([Resnet(i if j == 0 else o, o) for j in range(layers)])
            self.attentions = nn.ModuleList([Attn(o) for _ in range(layers)]) if attn else None
            self.downsamplers = None if last else nn.ModuleList([nn.Module()])
            if not last:
                self.downsamplers[0].conv = nn.Conv2d(o, o, 3, stride=2, padding=down_pad)

    class Up(nn.Module):
        def __init__(self, prev, o, inp, attn, last):
            super().__init__()
            self.resnets = nn.ModuleList([Resnet((prev if j == 0 else o) + (inp if j == layers else o), o)
                                          for j in range(layers + 1)])
            self.attentions = nn.ModuleList([Attn(o) for _ in range(layers + 1)]) if attn else None
            self.upsamplers = None if last else nn.ModuleList([nn.Module()])
            if not last:
                self.upsamplers[0].conv = nn.Conv2d(o, o, 3, padding=1)

    class Mid(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.resnets = nn.ModuleList([Resnet(c, c), Resnet(c, c)])
            self.attentions = nn.ModuleList([Attn(c)])

    class TimeEmb(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear_1 = nn.Linear(chans[0], temb)
            self.linear_2 = nn.Linear(temb, temb)

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.time_embedding = TimeEmb()
            self.conv_in = nn.Conv2d(cin, chans[0], 3, padding=1)
            self.down_blocks = nn.ModuleList()
            o = chans[0]
            for i, c in enumerate(chans):
                self.down_blocks.append(Down(o, c, attn_down[i], i == len(chans) - 1))
                o = c
            self.mid_block = Mid(chans[-1])
            rev = list(reversed(chans))
            self.up_blocks = nn.ModuleList()
            prev = chans[-1]
            for i, c in enumerate(rev):
                inp = rev[min(i + 1, len(rev) - 1)]
                self.up_blocks.append(Up(prev, c, inp, attn_down[len(rev) - 1 - i], i == len(rev) - 1))
                prev = c
            self.conv_norm_out = nn.GroupNorm(groups, chans[0], eps=eps)
            self.conv_out = nn.Conv2d(chans[0], cout, 3, padding=1)

        def forward(self, x, t):
            half = chans[0] // 2
            freqs = torch.exp(-math.log(10000) * torch.arange(half, device=x.device, dtype=torch.float32) / (half - 1))
            a = t.float()[:, None] * freqs[None]
            e = torch.cat([torch.sin(a), torch.cos(a)], 1)
            st = F.silu(self.time_embedding.linear_2(F.silu(self.time_embedding.linear_1(e))))
            h = self.conv_in(x)
            skips = [h]
            for blk in self.down_blocks:
                for j, r in enumerate(blk.resnets):
                    h = r(h, st)
                    if blk.attentions is not None:
                        h = blk.attentions[j](h)
                    skips.append(h)
                if blk.downsamplers is not None:
                    if down_pad == 0:
                        h = F.pad(h, (0, 1, 0, 1))
                    h = blk.downsamplers[0].conv(h)
                    skips.append(h)
            h = self.mid_block.resnets[0](h, st)
            h = self.mid_block.attentions[0](h)
            h = self.mid_block.resnets[1](h, st)
            for blk in self.up_blocks:
                for j, r in enumerate(blk.resnets):
                    h = r(torch.cat([h, skips.pop()], 1), st)
                    if blk.attentions is not None:
                        h = blk.attentions[j](h)
                if blk.upsamplers is not None:
                    h = blk.upsamplers[0].conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            return self.conv_out(F.silu(self.conv_norm_out(h)))

    return UNet()


def read_safetensors(path):
    """Reads a float32/float16 safetensors file with numpy: {name: array}."""
    import numpy as np
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = {"F32": np.float32, "F16": np.float16}[info["dtype"]]
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=dt).astype(np.float32).reshape(info["shape"])
    return out


# google/ddpm-cifar10-32's UNet2DModel config (35,746,307 parameters).
DDPM_CIFAR10 = {
    "in_channels": 3, "out_channels": 3, "sample_size": 32, "block_out_channels": [128, 256, 256, 256],
    "layers_per_block": 2, "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 32,
    "norm_eps": 1e-6, "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
    "attention_head_dim": None, "act_fn": "silu",
}


def read_config(config_path):
    if config_path == "ddpm-cifar10":
        return dict(DDPM_CIFAR10)
    with open(config_path) as f:
        return json.load(f)


def load_unet(torch, config_path):
    """Builds the UNet: bench/unet_torch.py's definition when it exists
    (written by the UNet/bench engineers), else lab_unet. config_path is a
    diffusers config.json or the preset name ddpm-cifar10."""
    cfg = read_config(config_path)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    try:
        import unet_torch  # noqa: E402
    except ImportError:
        return lab_unet(torch, cfg), "lab_unet (torch_gpu.py)"
    for name in ("build_model", "from_config", "model_from_config", "UNet2DModel", "UNet"):
        ctor = getattr(unet_torch, name, None)
        if ctor is None:
            continue
        for arg in (cfg,) if config_path == "ddpm-cifar10" else (cfg, config_path):
            try:
                return ctor(arg), "unet_torch.%s" % name
            except Exception:
                continue
    return lab_unet(torch, cfg), "lab_unet (unet_torch.py has no usable constructor)"


def check_fixture(torch, d):
    """Loads a diffusers folder (config.json, diffusion_pytorch_model.safetensors,
    x.npy, timesteps.npy, out.npy) into lab_unet and prints the relative L2 error."""
    import numpy as np
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    m = lab_unet(torch, cfg)
    sd = {k: torch.from_numpy(v.copy()) for k, v in read_safetensors(os.path.join(d, "diffusion_pytorch_model.safetensors")).items()}
    m.load_state_dict(sd, strict=True)
    x = torch.from_numpy(np.load(os.path.join(d, "x.npy")).astype(np.float32))
    t = torch.from_numpy(np.load(os.path.join(d, "timesteps.npy")))
    want = np.load(os.path.join(d, "out.npy"))
    with torch.no_grad():
        got = m(x, t).numpy()
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    emit(name="fixture", rel_l2=err)
    return 0 if err < 1e-4 else 1


def call_model(model, x, t):
    out = model(x, t)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "sample"):
        out = out.sample
    return out


def run_model(torch, config_path, batch, steps, train_iters, dev="cuda"):
    try:
        model, src = load_unet(torch, config_path)
    except Exception as e:
        emit(name="SampleDDIM", skip="model: %s" % e)
        emit(name="TrainStep", skip="model: %s" % e)
        return
    model = model.to(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    nparams = sum(p.numel() for p in model.parameters())
    emit(name="Params", value=nparams, source=src)
    cfg = read_config(config_path)
    ch, size = cfg.get("in_channels", 3), cfg.get("sample_size", 32)
    if isinstance(size, (list, tuple)):
        size = size[0]
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    ts = list(range(T - 1, -1, -T // steps))[:steps]

    def sample():
        x = torch.randn(batch, ch, size, size, device=dev)
        with torch.no_grad():
            for i, t in enumerate(ts):
                a = float(ac[t])
                ap = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
                tt = torch.full((batch,), t, device=dev, dtype=torch.long)
                eps = call_model(model, x, tt)
                x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
                x = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps
        return x

    model.eval()
    sample()  # warm-up (cudnn.benchmark picks algorithms)
    sync()
    t0 = time.perf_counter()
    sample()
    sync()
    el = time.perf_counter() - t0
    emit(name="SampleDDIM", ms=el * 1e3, images_per_s=batch / el, batch=batch, steps=steps)

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
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
        opt.step()

    emit(name="TrainStep", ms=timed(torch, step, train_iters, warmup=2, device=dev), batch=batch)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", action="store_true")
    ap.add_argument("--model", metavar="CONFIG_JSON", help="a diffusers config.json or the preset ddpm-cifar10")
    ap.add_argument("--cpu-smoke", action="store_true", help="run the whole-model path on the CPU at batch 2, 2 steps")
    ap.add_argument("--count-params", metavar="CONFIG_JSON", help="print lab_unet's parameter count (CPU)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--train-iters", type=int, default=5)
    ap.add_argument("--precision", choices=["tf32", "fp32"], default="tf32")
    ap.add_argument("--check-fixture", metavar="DIR", help="check lab_unet against a diffusers fixture folder (CPU is fine)")
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        emit(name="torch", skip="no torch: %s" % e)
        return 0
    if args.check_fixture:
        return check_fixture(torch, args.check_fixture)
    if args.count_params:
        m = lab_unet(torch, read_config(args.count_params))
        emit(name="Params", value=sum(p.numel() for p in m.parameters()))
        return 0
    if args.cpu_smoke:  # exercises the model path on the CPU (tiny sizes), for the dry run
        emit(name="torch", version=torch.__version__, device="cpu (smoke test)")
        run_model(torch, "ddpm-cifar10", 2, 2, 1, dev="cpu")
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
