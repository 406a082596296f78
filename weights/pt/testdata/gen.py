# Writes the small .pt checkpoints the Go tests read, and expected.json with
# what PyTorch itself loads from each (names, dtypes, shapes, and every value
# as the bits of its float32 conversion), so the tests compare against
# torch, not against the Go reader.
# Run: cd weights/pt/testdata && /usr/bin/python3 gen.py
#      (Debian python3-torch 1.13, python3-numpy 1.24; deterministic)
import collections, io, json, pickle, struct, zipfile
import torch

torch.manual_seed(0)
special = [0.0, -0.0, 1.0, -2.5, 65504.0, 6.1035156e-05, 5.9604645e-08, float("inf"), float("-inf"), 0.1]


def save(name, obj, **kw):
    torch.save(obj, name, **kw)


# dtypes.pt: one tensor per storage type.
sd = collections.OrderedDict()
sd["f32"] = torch.randn(2, 3)
sd["f32_scalar"] = torch.tensor(1.5)
sd["f32_empty"] = torch.zeros(0, 3)
sd["f16"] = torch.tensor(special, dtype=torch.float16).reshape(2, 5)
sd["bf16"] = torch.tensor(special, dtype=torch.bfloat16)
sd["f64"] = torch.tensor([0.1, -1e10, 3.0, 1e-45], dtype=torch.float64)
sd["conv.weight"] = torch.randn(4, 2, 3, 3)
sd["bn.num_batches_tracked"] = torch.tensor(7)
sd["i32"] = torch.tensor([0, 1, -1, 2**31 - 1], dtype=torch.int32)
sd["i16"] = torch.tensor([-3, 300], dtype=torch.int16)
sd["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
sd["u8"] = torch.tensor([0, 128, 255], dtype=torch.uint8)
sd["bool"] = torch.tensor([True, False, True])
save("dtypes.pt", sd)

# views.pt: tensors that are views: offsets, transposes, slices, shared
# storages (torch.save keeps the view and saves each storage once).
base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
half = torch.randn(5, 4).half()
sd = collections.OrderedDict()
sd["base"] = base
sd["rows"] = base[1:3]              # offset 6, contiguous
sd["cols"] = base[:, 2:5]           # offset 2, strides (6, 1)
sd["t"] = base.t()                  # strides (1, 6)
sd["every_other"] = base[::2, ::3]  # strides (12, 3)
sd["elem"] = base[3, 5]             # a scalar at offset 23
sd["half_t"] = half.t()[1:]         # F16, transposed and offset
sd["perm"] = torch.randn(2, 3, 4).permute(2, 0, 1)
save("views.pt", sd)

# mixed.pt: a checkpoint with non-tensor entries and nested dicts.
sd = collections.OrderedDict()
sd["epoch"] = 3
sd["name"] = "ddpm"
sd["none"] = None
sd["lr"] = 1e-4
sd["list"] = [torch.ones(2), 1]
sd["model"] = collections.OrderedDict([("w", torch.full((2, 2), 0.5)), ("b", torch.tensor([1.0, -1.0]))])
sd["ema"] = {"w": torch.full((2, 2), 0.25)}
sd["step"] = torch.tensor(10)
save("mixed.pt", sd)

# param.pt: nn.Parameters (keep_vars=True pickles _rebuild_parameter).
lin = torch.nn.Linear(3, 2)
save("param.pt", lin.state_dict(keep_vars=True))

# proto4.pt: pickle protocol 4 (FRAME, STACK_GLOBAL, MEMOIZE).
save("proto4.pt", collections.OrderedDict([("a", torch.randn(3)), ("b", torch.randn(2, 2).half())]), pickle_protocol=4)

# legacy.pt: the pre-zip format.
save("legacy.pt", collections.OrderedDict([("a", torch.randn(3)), ("b", torch.randn(2, 2).half()),
                                           ("n", torch.tensor(5)), ("v", base[1:, 2:4])]),
     _use_new_zipfile_serialization=False)


def rezip(src, dst, edit):
    """Copies the zip src to dst, passing each (name, bytes) through edit."""
    zin = zipfile.ZipFile(src)
    with zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            name, data, comp = edit(info.filename, zin.read(info.filename))
            zout.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=comp)
        extra = edit(None, None)
        if extra:
            zout.writestr(zipfile.ZipInfo(extra[0], date_time=(1980, 1, 1, 0, 0, 0)), extra[1])


# deflate.pt: proto4.pt with every entry deflate-compressed (torch.load
# reads it; torch.save never writes it).
rezip("proto4.pt", "deflate.pt", lambda n, d: (n, d, zipfile.ZIP_DEFLATED) if n else None)

# bigendian.pt: views.pt as a big-endian machine would write it: a
# byteorder record saying "big" and every storage byte-swapped.
def storage_sizes(pt, prefix):
    """Element size of each storage key, from the pickle's persistent ids."""
    out = {}

    class U(pickle.Unpickler):
        def find_class(self, mod, name):
            if name.endswith("Storage"):
                return name
            if name == "OrderedDict":
                return collections.OrderedDict
            return lambda *a: None

        def persistent_load(self, pid):
            out[pid[2]] = {"FloatStorage": 4, "HalfStorage": 2}[pid[1]]
            return None

    U(io.BytesIO(zipfile.ZipFile(pt).read(prefix + "/data.pkl"))).load()
    return out


es = storage_sizes("views.pt", "views")


def swap(n, d):
    if n is None:
        return ("bigendian/byteorder", b"big")
    n = n.replace("views/", "bigendian/", 1)
    if "/data/" in n:
        k = es[n.rsplit("/", 1)[1]]
        fmt = {4: "I", 2: "H"}[k]
        cnt = len(d) // k
        d = struct.pack(">%d%s" % (cnt, fmt), *struct.unpack("<%d%s" % (cnt, fmt), d))
    return (n, d, zipfile.ZIP_STORED)


rezip("views.pt", "bigendian.pt", swap)

# expected.json: what torch.load returns for each file, flattened the way
# the Go reader names nested entries; values as float32 bit patterns.
def flat(obj, prefix, out):
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[prefix + k] = v
        elif isinstance(v, dict):
            flat(v, prefix + k + ".", out)


dt = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
expected = {}
for f in ["dtypes.pt", "views.pt", "mixed.pt", "param.pt", "proto4.pt", "legacy.pt", "deflate.pt", "bigendian.pt"]:
    # torch 1.13 ignores a byteorder record, so read bigendian.pt's twin.
    src = "views.pt" if f == "bigendian.pt" else f
    out = collections.OrderedDict()
    flat(torch.load(src), "", out)
    expected[f] = [
        {"name": k, "dtype": dt[v.dtype], "shape": list(v.shape),
         "bits": [int(x) for x in v.detach().to(torch.float32).contiguous().view(torch.int32).flatten().tolist()]}
        for k, v in out.items()]
with open("expected.json", "w") as fh:
    json.dump(expected, fh, indent=0)
    fh.write("\n")
