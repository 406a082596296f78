#!/usr/bin/env python3
"""Makes cmd/ddpm/testdata/diffusers-pipeline: a small class-conditional
diffusers pipeline with random weights, and the final samples of the real
diffusers 0.21.4 sampling loop under each deterministic scheduler.

  make_pipeline_fixture.py --diffusers SRC [--hub SRC] [--out DIR] [--check]

SRC is diffusers' `src` folder at v0.21.4 (git archive v0.21.4 src) and
huggingface_hub's `src` (v0.17.3); pytorch/shims stands in for the
safetensors package. Everything is seeded and runs on one thread, so a
rerun writes the same bytes on the same machine (--check compares instead
of writing and exits 1 on a difference beyond 1e-6 relative).

The model (UNet2DModel): sample_size 16, RGB in and out, block_out_channels
(32, 64), layers_per_block 1, down (DownBlock2D, AttnDownBlock2D), up
(AttnUpBlock2D, UpBlock2D), one attention head, norm_num_groups 8, norm_eps
1e-6, num_class_embeds 11 (class 10 is never used: ddpm_null_class 10),
flip_sin_to_cos true, freq_shift 0, downsample_padding 1. Built after
torch.manual_seed(0), then every parameter += N(0, 0.02) from
torch.Generator().manual_seed(1) in sorted-name order.

Each run: scheduler built with the base betas (1000 steps, linear 1e-4 to
0.02, epsilon) and its options, saved with save_config, reloaded from that
file, then exactly the diffusers pipeline loop in float32:

    s.set_timesteps(N); x = noise * s.init_noise_sigma
    for t in s.timesteps:
        out = unet(s.scale_model_input(x, t), t, class_labels=y).sample
        x = s.step(out, t, x).prev_sample

with noise.npy (3, 3, 16, 16) ~ N(0, 1) from torch.Generator().manual_seed(0)
and y = [1, 4, 9]; the unet is the one reloaded from the written folder.
The same loop with pytorch/unet2d.py (the twin) gives twin_rel_l2; with the
twin in float64 (loop still float32), model_f64_rel_l2: the float32 rounding
floor a second implementation should expect; nearest_other_rel_l2 is the
distance to the closest other run (what any tolerance must stay below).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import unet2d  # noqa: E402

UNET = dict(
    sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None, norm_num_groups=8, norm_eps=1e-6, num_class_embeds=11,
    flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
)
NULL_CLASS = 10
LABELS = [1, 4, 9]
BASE = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
            prediction_type="epsilon")

# name: (scheduler class, options on top of BASE, steps)
RUNS = [
    ("ddim_leading", "DDIMScheduler", dict(timestep_spacing="leading", clip_sample=True), 10),
    ("ddim_leading_20", "DDIMScheduler", dict(timestep_spacing="leading", clip_sample=True), 20),
    ("ddim_trailing", "DDIMScheduler", dict(timestep_spacing="trailing", clip_sample=True), 10),
    ("pndm_plms", "PNDMScheduler", dict(skip_prk_steps=True), 10),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2), 10),
    ("dpmpp_2m_20", "DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2), 20),
    ("dpmpp_3m", "DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=3), 10),
    ("dpmpp_2m_karras", "DPMSolverMultistepScheduler",
     dict(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True), 10),
    ("dpmpp_2s", "DPMSolverSinglestepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2), 10),
    ("deis", "DEISMultistepScheduler", dict(solver_order=2), 10),
    ("unipc_bh2", "UniPCMultistepScheduler", dict(solver_type="bh2", solver_order=2), 10),
    ("euler", "EulerDiscreteScheduler", dict(), 10),
    ("euler_karras", "EulerDiscreteScheduler", dict(use_karras_sigmas=True), 10),
    ("heun", "HeunDiscreteScheduler", dict(), 10),
    ("kdpm2", "KDPM2DiscreteScheduler", dict(), 10),
    ("lms", "LMSDiscreteScheduler", dict(), 10),
]


def import_diffusers(src, hub):
    for p in (hub, os.path.join(HERE, "shims"), src):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    import diffusers
    return diffusers


def build_unet(diffusers):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**UNET).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in sorted(unet.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return unet


def write_pipeline(diffusers, unet, root):
    """model_index.json, unet/config.json, unet/diffusion_pytorch_model.safetensors,
    scheduler/scheduler_config.json, as diffusers' save_pretrained lays them out."""
    sched = diffusers.DDPMScheduler(**BASE)
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_config(root)
    unet.save_config(os.path.join(root, "unet"))
    sched.save_config(os.path.join(root, "scheduler"))
    cfg_path = os.path.join(root, "unet", "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["ddpm_null_class"] = NULL_CLASS  # a ddpm extension; diffusers ignores it
    with open(cfg_path, "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    unet2d.write_safetensors(os.path.join(root, "unet", "diffusion_pytorch_model.safetensors"),
                             unet.state_dict(), {"format": "pt"})


def sample(scheduler, model, noise, labels, steps):
    """The diffusers pipeline loop; model(x, t, labels) -> output tensor.
    Returns the final x and the t of every model call."""
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    calls = []
    for t in scheduler.timesteps:
        out = model(scheduler.scale_model_input(x, t), t, labels)
        calls.append(float(t))
        x = scheduler.step(out, t, x).prev_sample
    return x, calls


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusers", required=True, help="diffusers v0.21.4 src folder")
    ap.add_argument("--hub", help="huggingface_hub src folder (v0.17.x), when not installed")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "cmd", "ddpm", "testdata", "diffusers-pipeline"))
    ap.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare with --out")
    a = ap.parse_args()
    torch.set_num_threads(1)
    diffusers = import_diffusers(a.diffusers, a.hub)
    print(f"diffusers {diffusers.__version__} ({a.diffusers}), torch {torch.__version__}, numpy {np.__version__}")

    root = tempfile.mkdtemp(prefix="pipeline-") if a.check else a.out
    if not a.check and os.path.isdir(os.path.join(root, "runs")):
        shutil.rmtree(os.path.join(root, "runs"))
    os.makedirs(root, exist_ok=True)

    unet = build_unet(diffusers)
    write_pipeline(diffusers, unet, root)
    # Sample with the model as diffusers reads it back from the folder.
    loaded = diffusers.UNet2DModel.from_pretrained(root, subfolder="unet", use_safetensors=True).eval()
    for k, v in unet.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), f"reload changed {k}"
    twin = unet2d.load(root)
    print(f"unet: {sum(p.numel() for p in loaded.parameters())} parameters, {len(twin.params)} tensors")

    noise = torch.randn((3, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor(LABELS)
    np.save(os.path.join(root, "noise.npy"), noise.numpy())
    np.save(os.path.join(root, "class_labels.npy"), labels.numpy())

    def ref_model(x, t, y):
        with torch.no_grad():
            return loaded(x, t, class_labels=y).sample

    twin64 = twin.to(torch.float64)

    def twin64_model(x, t, y):  # the model in float64, the loop in float32
        return twin64(x.double(), t, y).float()

    summary = {}
    for name, cls_name, opts, steps in RUNS:
        cls = getattr(diffusers, cls_name)
        run_dir = os.path.join(root, "runs", name)
        cls(**BASE, **opts).save_config(run_dir)
        cfg = cls.load_config(run_dir)
        x_ref, calls = sample(cls.from_config(cfg), ref_model, noise, labels, steps)
        x_twin, _ = sample(cls.from_config(cfg), twin, noise, labels, steps)
        x_64, _ = sample(cls.from_config(cfg), twin64_model, noise, labels, steps)
        final = x_ref.numpy().astype(np.float32)
        np.save(os.path.join(run_dir, "final.npy"), final)
        np.save(os.path.join(run_dir, "timesteps.npy"), np.array(calls, np.float64))
        e = rel_l2(x_twin.numpy(), final)
        summary[name] = {"class": cls_name, "options": opts, "steps": steps, "model_calls": len(calls),
                         "final_mean": float(final.mean()), "final_std": float(final.std()),
                         "twin_rel_l2": e, "model_f64_rel_l2": rel_l2(x_64.numpy(), final)}
        print(f"{name:16s} {cls_name:30s} steps {steps:2d} calls {len(calls):2d} "
              f"mean {final.mean():+.4f} std {final.std():8.4f} twin rel L2 {e:.2e} "
              f"model-in-f64 rel L2 {summary[name]['model_f64_rel_l2']:.2e}")
    # How far each run is from the nearest other run: what a tolerance must stay below.
    finals = {n: np.load(os.path.join(root, "runs", n, "final.npy")) for n in summary}
    for n in summary:
        near = min((rel_l2(finals[n], finals[m]), m) for m in summary if m != n)
        summary[n]["nearest_other_run"], summary[n]["nearest_other_rel_l2"] = near[1], near[0]
        print(f"{n:16s} nearest other run {near[1]:16s} rel L2 {near[0]:.2e}")
    with open(os.path.join(root, "runs", "summary.json"), "w") as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")

    if a.check:
        bad = 0
        for name in summary:
            want = np.load(os.path.join(a.out, "runs", name, "final.npy"))
            got = np.load(os.path.join(root, "runs", name, "final.npy"))
            e = rel_l2(got, want)
            print(f"check {name:16s} rel L2 to committed {e:.2e}")
            bad += e > 1e-6
        shutil.rmtree(root)
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
