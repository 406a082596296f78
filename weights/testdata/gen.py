# Writes dtypes.safetensors: one tensor per dtype, encoded by NumPy/PyTorch
# (not by the Go code under test), laid out as the safetensors spec says.
# Run: /usr/bin/python3 gen.py   (Debian python3-numpy 1.24, python3-torch 1.13)
import json, struct
import numpy as np
import torch

vals = [0.0, -0.0, 1.0, -2.5, 65504.0, 6.1035156e-05, 5.9604645e-08, float("inf")]
ints = [0, 1, -1, 127, -128, 100]

tensors = {
    "f16": ("F16", [2, 4], np.array(vals, dtype="<f2").tobytes()),
    "bf16": ("BF16", [8], torch.tensor(vals, dtype=torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()),
    "f64": ("F64", [2, 2], np.array([0.1, -1e10, 3.0, 1e-45], dtype="<f8").tobytes()),
    "f32": ("F32", [], np.array([1.5], dtype="<f4").tobytes()),
    "i64": ("I64", [6], np.array(ints, dtype="<i8").tobytes()),
    "i32": ("I32", [6], np.array(ints, dtype="<i4").tobytes()),
    "i8": ("I8", [6], np.array(ints, dtype="i1").tobytes()),
    "u8": ("U8", [3], np.array([0, 128, 255], dtype="u1").tobytes()),
    "bool": ("BOOL", [2], np.array([True, False], dtype="?").tobytes()),
    "empty": ("F32", [0, 3], b""),
}
header = {"__metadata__": {"made_by": "gen.py"}}
data = b""
for name in sorted(tensors):
    dt, shape, raw = tensors[name]
    header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
    data += raw
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open("dtypes.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + data)
