#!/usr/bin/env python3
"""Runs the PyTorch twin (unet2d.py) on a diffusers folder, for Go tests of
`ddpm export --diffusers`.

  check_export.py [--float64] FOLDER X.npy T.npy [Y.npy] OUT.npy

FOLDER: a diffusers pipeline root (model_index.json, unet/, scheduler/) or a
UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors).
X.npy: (B, C, H, W) input, any float dtype. T.npy: the timestep(s), a scalar
or (B,), integer or fractional. Y.npy: (B,) integer class labels, for a
class-conditional model only. OUT.npy gets the model output (B, out_channels,
H, W) as float32 (float64 with --float64, which runs the twin in float64).

Exit status 0 on success; 2 with one line on stderr for bad arguments or a
folder the twin cannot load (missing, unexpected or mis-shaped tensors are
listed by name).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet2d  # noqa: E402


def main(argv):
    dtype = torch.float32
    if argv and argv[0] == "--float64":
        dtype, argv = torch.float64, argv[1:]
    if len(argv) not in (4, 5):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    folder, x_path, t_path = argv[:3]
    y_path = argv[3] if len(argv) == 5 else None
    out_path = argv[-1]
    torch.set_num_threads(1)  # deterministic, and bit-identical to diffusers run on one thread
    try:
        m = unet2d.load(folder, dtype=dtype)
        x = torch.from_numpy(np.load(x_path))
        t = torch.from_numpy(np.asarray(np.load(t_path)))
        y = torch.from_numpy(np.load(y_path)).long() if y_path else None
        if x.dim() != 4 or x.shape[1] != m.config["in_channels"]:
            raise ValueError(f"{x_path}: shape {tuple(x.shape)}, want (B, {m.config['in_channels']}, H, W)")
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, x.shape[0])):
            raise ValueError(f"{t_path}: shape {tuple(t.shape)}, want a scalar or ({x.shape[0]},)")
        if (y is None) != (m.config["num_class_embeds"] is None):
            raise ValueError("class labels Y.npy are needed exactly when the model has num_class_embeds "
                             f"(here {m.config['num_class_embeds']})")
        if y is not None and (y.shape != (x.shape[0],) or y.min() < 0 or y.max() >= m.config["num_class_embeds"]):
            raise ValueError(f"{y_path}: want ({x.shape[0]},) labels in [0, {m.config['num_class_embeds']})")
        out = m(x, t, class_labels=y)
    except (OSError, ValueError, KeyError) as e:
        print(f"check_export: {e}", file=sys.stderr)
        return 2
    np.save(out_path, out.numpy().astype(np.float64 if dtype == torch.float64 else np.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
