#!/usr/bin/env python3
"""A PyTorch twin of diffusers' UNet2DModel (v0.21.4) for the configs ddpm accepts.

Written from the architecture (Ho et al. 2020's UNet as diffusers names it),
not copied from diffusers: one functional forward pass over a flat dict of
tensors whose keys are exactly diffusers' state_dict keys, so a diffusers
folder loads as is and Go and Python can be compared tensor by tensor.

    import unet2d
    m = unet2d.load("path/to/pipeline")           # or a unet/ folder
    eps = m(x, t, class_labels=y)                 # x (B, C, H, W); t scalar or (B,)
    m64 = m.to(torch.float64)                     # float64 mode

Supported config (the same set as unet/config.go's Validate, plus
mid_block_scale_factor != 1):

    time_embedding_type "positional" (flip_sin_to_cos, freq_shift), act_fn silu,
    down/up blocks DownBlock2D | AttnDownBlock2D and UpBlock2D | AttnUpBlock2D,
    downsample_type/upsample_type "conv", downsample_padding 0 or 1,
    attention_head_dim (null = one head per layer), add_attention,
    mid_block_scale_factor, norm_num_groups, norm_eps, dropout (inference:
    ignored), in/out channels, center_input_sample, resnet_time_scale_shift
    "default", class_embed_type null with num_class_embeds (an nn.Embedding).

Numerics follow diffusers on purpose, also in float64 mode:
  * the sinusoidal time features are computed in float32 (diffusers casts
    t to float32 and only then to the model dtype);
  * attention softmax runs in float32 (diffusers' upcast_softmax) and is
    cast back to the model dtype.
Pass exact64=True to to() / load() to do both in the model dtype instead.

Absent config keys take diffusers' UNet2DModel defaults; note that
diffusers' default attention_head_dim is 8 (heads = channels / 8), not
"one head": configs written by diffusers always carry the key.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["UNet2D", "load", "read_safetensors", "write_safetensors", "DEFAULTS", "parse_config"]

# diffusers 0.21.4 UNet2DModel.__init__ defaults (used for absent keys).
DEFAULTS = {
    "sample_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
}

DOWN_TYPES = ("DownBlock2D", "AttnDownBlock2D")
UP_TYPES = ("UpBlock2D", "AttnUpBlock2D")


def parse_config(cfg):
    """Returns cfg (a dict, e.g. a parsed config.json) with diffusers'
    defaults for absent keys, after checking every value the twin relies on.
    Keys starting with "_" and unknown keys (ddpm_*) are kept and ignored."""
    c = dict(DEFAULTS)
    c.update(cfg)

    def bad(key, allowed):
        raise ValueError(f"unet2d: config {key} = {c.get(key)!r}: {allowed}")

    n = len(c["block_out_channels"])
    if n < 1:
        bad("block_out_channels", "needs at least one level")
    if len(c["down_block_types"]) != n:
        bad("down_block_types", f"needs {n} entries (one per block_out_channels entry)")
    if len(c["up_block_types"]) != n:
        bad("up_block_types", f"needs {n} entries (one per block_out_channels entry)")
    for i, t in enumerate(c["down_block_types"]):
        if t not in DOWN_TYPES:
            raise ValueError(f"unet2d: config down_block_types[{i}] = {t!r}: supported {DOWN_TYPES}")
    for i, t in enumerate(c["up_block_types"]):
        if t not in UP_TYPES:
            raise ValueError(f"unet2d: config up_block_types[{i}] = {t!r}: supported {UP_TYPES}")
    checks = [
        ("time_embedding_type", c["time_embedding_type"] == "positional", 'only "positional"'),
        ("act_fn", c["act_fn"] in ("silu", "swish"), 'only "silu"'),
        ("resnet_time_scale_shift", c["resnet_time_scale_shift"] == "default", 'only "default"'),
        ("class_embed_type", c["class_embed_type"] is None, "only null (an embedding table)"),
        ("downsample_type", c["downsample_type"] in (None, "conv"), 'only "conv"'),
        ("upsample_type", c["upsample_type"] in (None, "conv"), 'only "conv"'),
        ("downsample_padding", c["downsample_padding"] in (0, 1), "0 or 1"),
        ("layers_per_block", c["layers_per_block"] >= 1, "must be >= 1"),
        ("norm_num_groups", c["norm_num_groups"] is not None and c["norm_num_groups"] >= 1, "must be >= 1"),
        ("norm_eps", c["norm_eps"] > 0, "must be > 0"),
        ("num_class_embeds", c["num_class_embeds"] is None or c["num_class_embeds"] >= 1, ">= 1 or null"),
        ("mid_block_scale_factor", c["mid_block_scale_factor"] != 0, "must not be 0"),
    ]
    for key, ok, allowed in checks:
        if not ok:
            bad(key, allowed)
    for i, ch in enumerate(c["block_out_channels"]):
        if ch < 1 or ch % c["norm_num_groups"]:
            raise ValueError(f"unet2d: config block_out_channels[{i}] = {ch}: must be a positive multiple of "
                             f"norm_num_groups ({c['norm_num_groups']})")
        hd = c["attention_head_dim"]
        if hd is not None and (hd < 1 or ch % hd):
            bad("attention_head_dim", f"must divide block_out_channels[{i}] = {ch}")
    return c


def heads_of(cfg, ch):
    """(heads, head_dim) of an attention layer on ch channels: diffusers
    uses attention_head_dim channels per head; null means one head."""
    hd = cfg["attention_head_dim"]
    if hd is None:
        return 1, ch
    return ch // hd, hd


class _Params:
    """The tensors a forward pass reads, by diffusers name. In record mode
    it hands out zeros of the requested shape and remembers the layout."""

    def __init__(self, tensors=None):
        self.tensors = tensors
        self.layout = {}

    def __call__(self, name, shape, like):
        shape = tuple(shape)
        if self.tensors is None:
            self.layout[name] = shape
            return torch.zeros(shape, dtype=like.dtype)
        return self.tensors[name]


def _timestep_features(t, dim, flip, shift, dtype):
    """Sinusoidal features of Ho et al. 2020 (Transformer positional
    encoding) as diffusers computes them: frequencies
    exp(-ln(10000) * i / (dim/2 - freq_shift)), i = 0..dim/2-1, in float32;
    [sin, cos] of t*freq, or [cos, sin] with flip_sin_to_cos; an odd dim is
    padded with one zero. t (B,) may be fractional; result (B, dim)."""
    half = dim // 2
    freq = (-math.log(10000.0)) * torch.arange(half, dtype=dtype)
    freq = torch.exp(freq / (half - shift))
    arg = t[:, None].to(dtype) * freq[None, :]
    parts = [torch.cos(arg), torch.sin(arg)] if flip else [torch.sin(arg), torch.cos(arg)]
    emb = torch.cat(parts, dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class UNet2D:
    """diffusers UNet2DModel semantics over a dict of tensors (see module doc).

    config: a diffusers config dict (absent keys take diffusers' defaults).
    params: {diffusers state_dict key: tensor}; None gives random weights
    (seeded by seed), useful only for tests.
    """

    def __init__(self, config, params=None, dtype=torch.float32, exact64=False, seed=0):
        self.config = parse_config(config)
        self.exact64 = exact64
        self.layout = self._record_layout()
        if params is None:
            params = init_params(self.layout, seed)
        params = _rename_legacy(params)
        missing = sorted(set(self.layout) - set(params))
        extra = sorted(set(params) - set(self.layout))
        shaped = sorted(k for k in self.layout if k in params and tuple(params[k].shape) != self.layout[k])
        if missing or extra or shaped:
            msg = []
            if missing:
                msg.append(f"missing {missing}")
            if extra:
                msg.append(f"unexpected {extra}")
            if shaped:
                msg.append("mis-shaped " + ", ".join(f"{k} {tuple(params[k].shape)} (want {self.layout[k]})" for k in shaped))
            raise ValueError("unet2d: weights do not fit the config: " + "; ".join(msg))
        self.dtype = dtype
        self.params = {k: torch.as_tensor(params[k]).detach().to(dtype) for k in self.layout}

    def _record_layout(self):
        c = self.config
        side = 2 ** (len(c["block_out_channels"]) - 1)
        rec = _Params()
        x = torch.zeros(1, c["in_channels"], side, side)
        labels = torch.zeros(1, dtype=torch.long) if c["num_class_embeds"] is not None else None
        self._forward(rec, x, torch.zeros(1), labels)
        return rec.layout

    def to(self, dtype, exact64=None):
        """A copy of the model with its tensors in dtype (float32 or float64)."""
        m = UNet2D.__new__(UNet2D)
        m.config, m.layout = self.config, self.layout
        m.exact64 = self.exact64 if exact64 is None else exact64
        m.dtype = dtype
        m.params = {k: v.to(dtype) for k, v in self.params.items()}
        return m

    def state_dict(self):
        return dict(self.params)

    def num_params(self):
        return sum(v.numel() for v in self.params.values())

    @torch.no_grad()
    def __call__(self, x, t, class_labels=None):
        """Predicts the model output (epsilon, or epsilon and the variance
        values for out_channels = 2*in_channels) for x (B, C, H, W) at
        timestep t (a number, a 0-d tensor or one per batch item; fractional
        values are kept) with class_labels (B,) int for a class-conditional
        model. Returns (B, out_channels, H, W) in the model dtype."""
        x = torch.as_tensor(x).to(self.dtype)
        t = torch.as_tensor(t)
        if t.dim() == 0:
            t = t[None]
        t = t * torch.ones(x.shape[0], dtype=t.dtype)
        if self.config["num_class_embeds"] is not None:
            if class_labels is None:
                raise ValueError("unet2d: a class-conditional model needs class_labels")
            class_labels = torch.as_tensor(class_labels).long()
        return self._forward(_Params(self.params), x, t, class_labels)

    # ---- the network ------------------------------------------------------

    def _forward(self, P, x, t, y):
        c = self.config
        chans = c["block_out_channels"]
        levels = len(chans)
        temb_dim = 4 * chans[0]
        dt = x.dtype

        if c["center_input_sample"]:
            x = 2 * x - 1.0
        # Time (+ class) embedding: emb = linear_2(silu(linear_1(sinusoid(t)))) (+ E[y]), (B, 4*C0).
        feat_dtype = dt if self.exact64 else torch.float32
        tf = _timestep_features(t, chans[0], c["flip_sin_to_cos"], c["freq_shift"], feat_dtype).to(dt)
        emb = self._linear(P, "time_embedding.linear_1", tf, temb_dim)
        emb = self._linear(P, "time_embedding.linear_2", F.silu(emb), temb_dim)
        if c["num_class_embeds"] is not None:
            table = P("class_embedding.weight", (c["num_class_embeds"], temb_dim), emb)
            emb = emb + table[y].to(dt)
        semb = F.silu(emb)  # every ResNet block projects silu(emb)

        h = self._conv(P, "conv_in", x, chans[0])
        skips = [h]
        for i, ch in enumerate(chans):
            attn = c["down_block_types"][i] == "AttnDownBlock2D"
            for j in range(c["layers_per_block"]):
                h = self._resnet(P, f"down_blocks.{i}.resnets.{j}", h, semb, ch)
                if attn:
                    h = self._attention(P, f"down_blocks.{i}.attentions.{j}", h, ch)
                skips.append(h)
            if i < levels - 1:
                h = self._downsample(P, f"down_blocks.{i}.downsamplers.0.conv", h)
                skips.append(h)

        last = chans[-1]
        s = c["mid_block_scale_factor"]
        h = self._resnet(P, "mid_block.resnets.0", h, semb, last, s)
        if c["add_attention"]:
            h = self._attention(P, "mid_block.attentions.0", h, last, s)
        h = self._resnet(P, "mid_block.resnets.1", h, semb, last, s)

        for i in range(levels):
            ch = chans[levels - 1 - i]
            attn = c["up_block_types"][i] == "AttnUpBlock2D"
            for j in range(c["layers_per_block"] + 1):
                h = torch.cat([h, skips.pop()], dim=1)
                h = self._resnet(P, f"up_blocks.{i}.resnets.{j}", h, semb, ch)
                if attn:
                    h = self._attention(P, f"up_blocks.{i}.attentions.{j}", h, ch)
            if i < levels - 1:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self._conv(P, f"up_blocks.{i}.upsamplers.0.conv", h, ch)

        h = F.silu(self._norm(P, "conv_norm_out", h))
        return self._conv(P, "conv_out", h, c["out_channels"])

    def _linear(self, P, name, x, out):
        cin = x.shape[-1]
        return F.linear(x, P(name + ".weight", (out, cin), x), P(name + ".bias", (out,), x))

    def _conv(self, P, name, x, out, k=3, stride=1, pad=1):
        w = P(name + ".weight", (out, x.shape[1], k, k), x)
        return F.conv2d(x, w, P(name + ".bias", (out,), x), stride=stride, padding=pad)

    def _norm(self, P, name, x):
        ch = x.shape[1]
        return F.group_norm(x, self.config["norm_num_groups"], P(name + ".weight", (ch,), x),
                            P(name + ".bias", (ch,), x), self.config["norm_eps"])

    def _downsample(self, P, name, x):
        """Downsample2D: 3x3 stride-2 conv; downsample_padding 0 pads only the
        bottom and right by one (so even sizes halve), 1 pads every side."""
        if self.config["downsample_padding"] == 0:
            x = F.pad(x, (0, 1, 0, 1))
            return self._conv(P, name, x, x.shape[1], stride=2, pad=0)
        return self._conv(P, name, x, x.shape[1], stride=2, pad=1)

    def _resnet(self, P, name, x, semb, out, scale=1.0):
        """ResnetBlock2D: h = conv1(silu(norm1(x))) + time_emb_proj(silu(emb));
        h = conv2(dropout(silu(norm2(h)))); (shortcut(x) + h) / scale, with a
        1x1 conv_shortcut when the channel count changes."""
        h = self._conv(P, name + ".conv1", F.silu(self._norm(P, name + ".norm1", x)), out)
        h = h + self._linear(P, name + ".time_emb_proj", semb, out)[:, :, None, None]
        h = self._conv(P, name + ".conv2", F.silu(self._norm(P, name + ".norm2", h)), out)
        if x.shape[1] != out:
            x = self._conv(P, name + ".conv_shortcut", x, out, k=1, pad=0)
        out = x + h
        return out / scale if scale != 1 else out

    def _attention(self, P, name, x, ch, scale=1.0):
        """Self-attention over the H*W positions: tokens of group_norm(x),
        per head softmax(q k^T / sqrt(d)) v, to_out.0, plus the residual,
        divided by scale (mid_block_scale_factor in the mid block)."""
        B, C, H, W = x.shape
        heads, d = heads_of(self.config, ch)
        # GroupNorm over the (B, C, T) view, T = H*W: the same numbers as on
        # (B, C, H, W), but PyTorch's kernel then reduces in diffusers' order,
        # so float32 outputs agree bit for bit (on 4-D input they differ ~1e-7).
        tok = self._norm(P, name + ".group_norm", x.reshape(B, C, H * W)).transpose(1, 2)  # (B, T, C)

        def split(z):  # (B, T, heads*d) -> (B*heads, T, d)
            return z.reshape(B, H * W, heads, d).permute(0, 2, 1, 3).reshape(B * heads, H * W, d)

        q = split(self._linear(P, name + ".to_q", tok, heads * d))
        k = split(self._linear(P, name + ".to_k", tok, heads * d))
        v = split(self._linear(P, name + ".to_v", tok, heads * d))
        scores = torch.bmm(q, k.transpose(1, 2)) * (d ** -0.5)  # (B*heads, T, T)
        if self.exact64:
            probs = scores.softmax(-1)
        else:
            probs = scores.float().softmax(-1).to(x.dtype)
        o = torch.bmm(probs, v)  # (B*heads, T, d)
        o = o.reshape(B, heads, H * W, d).permute(0, 2, 1, 3).reshape(B, H * W, heads * d)
        o = self._linear(P, name + ".to_out.0", o, C)
        o = o.transpose(1, 2).reshape(B, C, H, W) + x
        return o / scale if scale != 1 else o


def init_params(layout, seed=0):
    """Random weights for a layout {name: shape}: weights and biases uniform
    in +-1/sqrt(fan_in) (PyTorch's default bound), norms 1 and 0 plus
    N(0, 0.02) noise, embeddings N(0, 1). Seeded, float32."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in sorted(layout.items()):
        if "norm" in name.rsplit(".", 2)[-2]:
            base = 1.0 if name.endswith(".weight") else 0.0
            out[name] = base + 0.02 * torch.randn(shape, generator=g)
        elif name == "class_embedding.weight":
            out[name] = torch.randn(shape, generator=g)
        else:
            wshape = layout[name[: -len("bias")] + "weight"] if name.endswith(".bias") else shape
            fan = int(np.prod(wshape[1:]))
            bound = 1 / math.sqrt(max(fan, 1))
            out[name] = (2 * torch.rand(shape, generator=g) - 1) * bound
    return out


_LEGACY = ((".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0."))


def _rename_legacy(params):
    """Maps the attention names of diffusers < 0.14 (query, key, value,
    proj_attn) to today's (to_q, to_k, to_v, to_out.0)."""
    out = {}
    for k, v in params.items():
        for old, new in _LEGACY:
            k = k.replace(old, new)
        out[k] = v
    return out


# ---- safetensors ------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": None,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NP_TO_ST = {np.dtype(v): k for k, v in _ST_DTYPES.items() if v is not None}


def read_safetensors(path, with_metadata=False):
    """Reads a .safetensors file (8-byte little-endian header length, a JSON
    header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then
    the raw little-endian data) into {name: torch.Tensor}. BF16 is widened
    to float32. With with_metadata, returns (tensors, metadata)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"read_safetensors {path}: file too short")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"read_safetensors {path}: header length {n} beyond the file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"read_safetensors {path}: {name} offsets {begin}, {end} outside the data")
        shape = tuple(info["shape"])
        if info["dtype"] == "BF16":
            u = np.frombuffer(data[begin:end], dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif info["dtype"] in _ST_DTYPES:
            arr = np.frombuffer(data[begin:end], dtype=np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<"))
        else:
            raise ValueError(f"read_safetensors {path}: {name} has unsupported dtype {info['dtype']}")
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"read_safetensors {path}: {name} has {arr.size} values for shape {shape}")
        out[name] = torch.from_numpy(arr.reshape(shape).astype(arr.dtype.newbyteorder("="), copy=True))
    return (out, meta) if with_metadata else out


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor or array} as a .safetensors file, names sorted,
    data 8-byte aligned after the header (as the safetensors library does)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name]
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        a = np.ascontiguousarray(a)
        if a.dtype not in _NP_TO_ST:
            raise ValueError(f"write_safetensors: {name} has unsupported dtype {a.dtype}")
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _NP_TO_ST[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---- folders ------------------------------------------------------------------


def unet_dir(folder):
    """The folder holding the UNet's config.json: folder itself, or
    folder/unet for a pipeline root."""
    if os.path.exists(os.path.join(folder, "unet", "config.json")):
        return os.path.join(folder, "unet")
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    raise FileNotFoundError(f"unet2d: {folder} holds neither config.json nor unet/config.json")


def load(folder, dtype=torch.float32, exact64=False):
    """Loads a diffusers UNet2DModel folder (config.json +
    diffusion_pytorch_model.safetensors, or .bin) or a pipeline root (its
    unet/). The returned model also carries .scheduler_config (the
    pipeline's scheduler/scheduler_config.json, or None) and .folder."""
    d = unet_dir(folder)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    st = os.path.join(d, "diffusion_pytorch_model.safetensors")
    if os.path.exists(st):
        params = read_safetensors(st)
    else:
        bin_path = os.path.join(d, "diffusion_pytorch_model.bin")
        if not os.path.exists(bin_path):
            raise FileNotFoundError(f"unet2d: {d} has no diffusion_pytorch_model.safetensors or .bin")
        params = torch.load(bin_path, map_location="cpu")
    try:
        m = UNet2D(cfg, params, dtype=dtype, exact64=exact64)
    except ValueError as e:
        raise ValueError(f"load {d}: {e}") from None
    m.folder = d
    m.scheduler_config = None
    sched = os.path.join(os.path.dirname(os.path.abspath(d)), "scheduler", "scheduler_config.json")
    if d != folder and os.path.exists(sched):
        with open(sched) as f:
            m.scheduler_config = json.load(f)
    return m


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: unet2d.py FOLDER   (prints the config and parameter count)")
    m = load(sys.argv[1])
    print(json.dumps({k: v for k, v in m.config.items() if not k.startswith("_")}, indent=2))
    print(f"{len(m.params)} tensors, {m.num_params()} parameters")
