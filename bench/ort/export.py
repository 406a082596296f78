#!/usr/bin/env python3
"""Export pytorch/unet2d.py's twin of a diffusers UNet2DModel to ONNX for
ONNX Runtime (bench/ort/bench.js), with PyTorch's own exporter.

  export.py --config CONFIG_JSON|ddpm-cifar10 --batch N --out FILE.onnx

Random weights from seed 0 (speed does not depend on them); the batch is
fixed in the graph, as `ddpm bench` knows its batch too. Opset 17.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "pytorch"))
import bench_gpu as torch_gpu  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cfg = torch_gpu.read_config(a.config)
    model = torch_gpu.twin_module(torch, cfg).eval()
    ch, size = cfg.get("in_channels", 3), cfg.get("sample_size", 32)
    x = torch.randn(a.batch, ch, size, size)
    t = torch.full((a.batch,), 500, dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(model, (x, t), a.out, opset_version=17, input_names=["x", "t"],
                          output_names=["eps"], do_constant_folding=True)
    print(a.out)


if __name__ == "__main__":
    main()
