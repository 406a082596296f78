"""safetensors.torch.load_file / save_file on top of unet2d's own reader and writer."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import unet2d  # noqa: E402


def load_file(filename, device="cpu"):
    return {k: v.to(device) for k, v in unet2d.read_safetensors(filename).items()}


def save_file(tensors, filename, metadata=None):
    unet2d.write_safetensors(filename, tensors, metadata)
