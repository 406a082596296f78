#!/usr/bin/env python3
"""Checks pytorch/unet2d.py (the twin) against diffusers' UNet2DModel.

  check_twin.py [--diffusers SRC] [--hub SRC] [--fixtures DIR]

(a) The shared fixture diffusers-unet-small (made by diffusers 0.21.4):
    out.npy (float32, rel L2 < 1e-5) and out_f64.npy (float64, < 1e-10).
(b) With --diffusers SRC (the `src` folder of diffusers v0.21.4, e.g. from
    `git archive v0.21.4 src`) and --hub SRC (huggingface_hub's `src`,
    v0.17.x): builds the real UNet2DModel for several configs with seeded
    random weights perturbed by N(0, 0.02), loads its state_dict into the
    twin (the key sets must be equal) and compares outputs at fractional and
    integer timesteps, in float32 (rel L2 < 1e-5) and float64 (< 1e-10).
    Skipped, saying so, when SRC is absent.

Relative L2 is ||twin - ref|| / ||ref|| over the whole output. Prints one
line per check and a JSON summary last; exits 1 on any failure.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import unet2d  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}

# Configs for (b): each is the UNet2DModel kwargs; together they cover every
# feature unet/config.go accepts (and mid_block_scale_factor != 1).
CASES = [
    ("cond_heads_learnedvar_pad0", dict(
        sample_size=16, in_channels=3, out_channels=6, block_out_channels=(16, 32, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8, norm_num_groups=8, norm_eps=1e-6, downsample_padding=0,
        flip_sin_to_cos=True, freq_shift=0, num_class_embeds=11)),
    ("ddpm_style_flip0_shift1_noattnmid_center", dict(
        sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32, 48), layers_per_block=2,
        down_block_types=("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=None, norm_num_groups=16, norm_eps=1e-6, downsample_padding=0,
        flip_sin_to_cos=False, freq_shift=1, add_attention=False, center_input_sample=True, dropout=0.1)),
    ("midscale_groups4_pad1_2levels", dict(
        sample_size=8, in_channels=2, out_channels=4, block_out_channels=(12, 24), layers_per_block=1,
        down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"),
        attention_head_dim=4, norm_num_groups=4, norm_eps=1e-5, downsample_padding=1,
        flip_sin_to_cos=True, freq_shift=1, mid_block_scale_factor=1.4142135623730951, num_class_embeds=3)),
    ("odd_temb_one_level_cond", dict(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(9,), layers_per_block=2,
        down_block_types=("AttnDownBlock2D",), up_block_types=("UpBlock2D",),
        attention_head_dim=3, norm_num_groups=3, norm_eps=1e-6, downsample_padding=1,
        flip_sin_to_cos=False, freq_shift=0, num_class_embeds=5)),
    # attention_head_dim absent: diffusers' default 8 (heads = channels / 8).
    ("absent_head_dim_default8", dict(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, norm_eps=1e-6)),
]


def rel_l2(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm())


def check_fixture(folder, results):
    if not os.path.isdir(folder):
        print(f"SKIP fixture: {folder} not found")
        return True
    m = unet2d.load(folder)
    x = torch.from_numpy(np.load(os.path.join(folder, "x.npy")))
    t = torch.from_numpy(np.load(os.path.join(folder, "timesteps.npy")))
    ok = True
    for dtype, ref_name in ((torch.float32, "out.npy"), (torch.float64, "out_f64.npy")):
        ref = np.load(os.path.join(folder, ref_name))
        out = m.to(dtype)(x.to(dtype), t)
        e = rel_l2(out, ref)
        good = e < TOL[dtype]
        ok &= good
        results.append({"check": "fixture diffusers-unet-small", "dtype": str(dtype), "rel_l2": e, "ok": good})
        print(f"{'ok  ' if good else 'FAIL'} fixture diffusers-unet-small {ref_name:12s} {str(dtype):14s} rel L2 {e:.3e}")
    return ok


def import_diffusers(src, hub):
    """Imports diffusers from a source tree: huggingface_hub from hub (or
    installed), and pytorch/shims for the safetensors package Debian lacks."""
    for p in (hub, os.path.join(HERE, "shims"), src):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    import diffusers  # noqa: F401
    from diffusers import UNet2DModel
    return diffusers.__version__, UNet2DModel


def perturb_(model, seed, std=0.02):
    """Adds N(0, std) to every parameter (seeded) so nothing is trivially 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def check_diffusers(UNet2DModel, results):
    ok = True
    for seed, (name, kw) in enumerate(CASES):
        torch.manual_seed(1000 + seed)
        ref = UNet2DModel(**kw).eval()
        perturb_(ref, 2000 + seed)
        sd = ref.state_dict()
        cfg = {k: v for k, v in dict(ref.config).items() if not k.startswith("_")}
        if "attention_head_dim" not in kw:
            cfg.pop("attention_head_dim")  # the twin must supply diffusers' default itself
        twin = unet2d.UNet2D(json.loads(json.dumps(cfg)), sd)
        same_keys = set(twin.layout) == set(sd)
        if not same_keys:
            print(f"FAIL {name}: key sets differ: twin-only {sorted(set(twin.layout) - set(sd))}, "
                  f"diffusers-only {sorted(set(sd) - set(twin.layout))}")
            ok = False
            continue
        g = torch.Generator().manual_seed(3000 + seed)
        B, s = 3, kw["sample_size"]
        x = torch.randn(B, kw["in_channels"], s, s, generator=g)
        ts = [torch.tensor([0.0, 417.37, 999.0]), torch.tensor([1, 500, 998]), torch.tensor(731.5)]
        y = torch.randint(0, kw.get("num_class_embeds") or 1, (B,), generator=g) if kw.get("num_class_embeds") else None
        for dtype in (torch.float32, torch.float64):
            r, tw = ref.to(dtype), twin.to(dtype)
            worst = 0.0
            with torch.no_grad():
                for t in ts:
                    want = r(x.to(dtype), t, class_labels=y).sample
                    got = tw(x.to(dtype), t, class_labels=y)
                    worst = max(worst, rel_l2(got, want))
            good = worst < TOL[dtype]
            ok &= good
            results.append({"check": name, "dtype": str(dtype), "rel_l2": worst, "params": twin.num_params(), "ok": good})
            print(f"{'ok  ' if good else 'FAIL'} diffusers {name:42s} {str(dtype):14s} rel L2 {worst:.3e}  "
                  f"({twin.num_params()} params, {len(sd)} tensors)")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusers", help="diffusers v0.21.4 src folder (skipped when absent)")
    ap.add_argument("--hub", help="huggingface_hub src folder (v0.17.x), when not installed")
    ap.add_argument("--fixtures", default=os.environ.get("DDPM_FIXTURES", os.path.join(HERE, "..", "..", "shared", "fixtures")))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    results = []
    ok = check_fixture(os.path.join(a.fixtures, "diffusers-unet-small"), results)
    if a.diffusers and os.path.isdir(a.diffusers):
        version, UNet2DModel = import_diffusers(a.diffusers, a.hub)
        print(f"diffusers {version} from {a.diffusers}, torch {torch.__version__}")
        ok &= check_diffusers(UNet2DModel, results)
    else:
        print(f"SKIP diffusers comparison: no diffusers source given or found ({a.diffusers!r})")
    print(json.dumps({"ok": bool(ok), "results": results}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
