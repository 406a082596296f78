"""A stand-in for the `safetensors` package (not packaged by Debian) so that
diffusers' modeling_utils imports; only safetensors.torch.load_file and
save_file, implemented by ../../unet2d.py's reader and writer. Put
pytorch/shims on sys.path only when importing diffusers from source."""
from . import torch  # noqa: F401  (diffusers calls safetensors.torch.load_file)
