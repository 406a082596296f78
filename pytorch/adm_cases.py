"""Write adm/testdata/: small guided-diffusion networks run by OpenAI's own code.

usage: /usr/bin/python3 pytorch/adm_cases.py GUIDED_DIFFUSION_DIR [OUT_DIR]

GUIDED_DIFFUSION_DIR is a checkout of openai/guided-diffusion (tested at
22e0df8); OUT_DIR defaults to adm/testdata. Each case builds a network with
script_util's create_model / sr_create_model / create_classifier from the
flags below, sets every parameter from det_values (a counter-based hash of
the parameter's name, reproduced by adm's tests, so no weights are stored),
runs it in float32 on the CPU and writes:

  CASE/args.json    the flags (the scripts' names)
  CASE/x.npy        x_t, float32 (N, 3, H, W), N(0, 1) with seed 0
  CASE/t.npy        timesteps, float64 (N,) (fractional ones included)
  CASE/y.npy        class labels, int64 (N,) (class-conditional models)
  CASE/low_res.npy  the SuperResModel's low-resolution input
  CASE/out.npy      UNetModel / SuperResModel output, or classifier logits
  CASE/grad.npy     classifiers: d/dx sum_i log softmax(logits_i)[y_i]

and fp16/: a tiny use_fp16 UNetModel whose torso was converted to float16
by the model's own convert_to_fp16() before torch.save (model.pt holds
float16 and float32 tensors, as a state dict saved from a use_fp16 model
does), with args.json, x.npy, t.npy and out.npy (the float32 model on the
float16-rounded weights, the way ddpm runs it).

Needs only Debian's python3-torch (1.13) and python3-numpy.
"""

import json
import os
import sys

import numpy as np
import torch as th
import torch.nn.functional as F

M64 = (1 << 64) - 1


def fnv1a64(b):
    h = 0xCBF29CE484222325
    for c in b:
        h = ((h ^ c) * 0x100000001B3) & M64
    return h


def det_values(name, shape):
    """Deterministic parameter values, in float64: u in [0, 1) from a
    splitmix64 hash of (fnv1a64(name), i), mapped to +-1/sqrt(fan_in) for
    tensors of rank >= 2, 1 +- 0.1 for rank-1 '.weight' (norm scales) and
    +-0.1 for other rank-1 tensors (biases)."""
    n = int(np.prod(shape))
    h = np.uint64(fnv1a64(name.encode()))
    with np.errstate(over="ignore"):
        z = h + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    if len(shape) >= 2:
        scale, offset = 1.0 / np.sqrt(np.prod(shape[1:])), 0.0
    elif name.endswith(".weight"):
        scale, offset = 0.1, 1.0
    else:
        scale, offset = 0.1, 0.0
    return (offset + scale * (2 * u - 1)).reshape(shape)


CASES = {
    # UNetModel without scale-shift norm (h + emb), convolution up/down
    # sampling, QKVAttentionLegacy with num_heads and num_heads_upsample.
    "unet-legacy": dict(
        image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", learn_sigma=False,
        class_cond=False, attention_resolutions="8", num_heads=2, num_head_channels=-1,
        num_heads_upsample=1, use_scale_shift_norm=False, dropout=0.1, resblock_updown=False,
        use_fp16=False, use_new_attention_order=False, use_checkpoint=False),
    # Class-conditional UNetModel, learned sigma, new attention order with
    # num_heads, default channel_mult of image_size 64 would be large:
    # an explicit one with three levels.
    "unet-classcond": dict(
        image_size=32, num_channels=32, num_res_blocks=2, channel_mult="1,2,2", learn_sigma=True,
        class_cond=True, attention_resolutions="16,8", num_heads=4, num_head_channels=-1,
        num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=False,
        use_fp16=False, use_new_attention_order=True, use_checkpoint=False),
    # SuperResModel 16 -> 64 (sr_create_model's channel_mult for 64),
    # resblock up/down, class-conditional.
    "superres": dict(
        large_size=64, small_size=16, num_channels=32, num_res_blocks=1, learn_sigma=True,
        class_cond=True, attention_resolutions="16", num_heads=2, num_head_channels=-1,
        num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True,
        use_fp16=False, use_checkpoint=False),
    # EncoderUNetModel heads other than the fixture's attention pool.
    "classifier-adaptive": dict(
        image_size=64, classifier_use_fp16=False, classifier_width=32, classifier_depth=1,
        classifier_attention_resolutions="32", classifier_use_scale_shift_norm=False,
        classifier_resblock_updown=False, classifier_pool="adaptive"),
    "classifier-spatial": dict(
        image_size=64, classifier_use_fp16=False, classifier_width=32, classifier_depth=1,
        classifier_attention_resolutions="32", classifier_use_scale_shift_norm=True,
        classifier_resblock_updown=True, classifier_pool="spatial"),
    "classifier-spatial_v2": dict(
        image_size=64, classifier_use_fp16=False, classifier_width=32, classifier_depth=1,
        classifier_attention_resolutions="32", classifier_use_scale_shift_norm=True,
        classifier_resblock_updown=True, classifier_pool="spatial_v2"),
}


def main():
    gd = sys.argv[1]
    out_root = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "adm", "testdata")
    sys.path.insert(0, gd)
    from guided_diffusion import script_util as su

    th.set_num_threads(1)
    for name, flags in CASES.items():
        rng = np.random.default_rng(0)
        if name.startswith("classifier"):
            model = su.create_classifier(**flags)
            size = flags["image_size"]
        elif name == "superres":
            args = {k: v for k, v in flags.items()}
            model = su.sr_create_model(**args)
            size = flags["large_size"]
        else:
            model = su.create_model(**flags)
            size = flags["image_size"]
        with th.no_grad():
            for k, p in model.state_dict().items():
                p.copy_(th.from_numpy(det_values(k, tuple(p.shape))).to(p.dtype))
        model.eval()
        n = 2
        x = rng.standard_normal((n, 3, size, size)).astype(np.float32)
        t = np.array([10.5, 700.0])
        y = np.array([2, 9], dtype=np.int64)
        d = os.path.join(out_root, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "args.json"), "w") as f:
            json.dump(flags, f, indent=1)
        np.save(os.path.join(d, "x.npy"), x)
        np.save(os.path.join(d, "t.npy"), t)
        xt, tt = th.from_numpy(x), th.from_numpy(t)
        if name.startswith("classifier"):
            np.save(os.path.join(d, "y.npy"), y)
            xin = xt.clone().requires_grad_(True)
            logits = model(xin, tt)
            lp = F.log_softmax(logits, dim=-1)[range(n), th.from_numpy(y)]
            grad = th.autograd.grad(lp.sum(), xin)[0]
            np.save(os.path.join(d, "out.npy"), logits.detach().numpy())
            np.save(os.path.join(d, "grad.npy"), grad.numpy())
            print(name, "logits", tuple(logits.shape), "grad", tuple(grad.shape))
            continue
        kw = {}
        if flags["class_cond"]:
            np.save(os.path.join(d, "y.npy"), y)
            kw["y"] = th.from_numpy(y)
        if name == "superres":
            s = flags["small_size"]
            low = rng.standard_normal((n, 3, s, s)).astype(np.float32)
            np.save(os.path.join(d, "low_res.npy"), low)
            kw["low_res"] = th.from_numpy(low)
        with th.no_grad():
            out = model(xt, tt, **kw)
        np.save(os.path.join(d, "out.npy"), out.numpy())
        print(name, "out", tuple(out.shape))
    fp16(su, out_root)


def fp16(su, out_root):
    flags = dict(
        image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1", learn_sigma=False, class_cond=False,
        attention_resolutions="8", num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
        use_scale_shift_norm=True, dropout=0.0, resblock_updown=False, use_fp16=True,
        use_new_attention_order=False, use_checkpoint=False)
    model = su.create_model(**flags)
    with th.no_grad():
        for k, p in model.state_dict().items():
            p.copy_(th.from_numpy(det_values(k, tuple(p.shape))).to(p.dtype))
    model.convert_to_fp16()
    d = os.path.join(out_root, "fp16")
    os.makedirs(d, exist_ok=True)
    sd = model.state_dict()
    th.save(sd, os.path.join(d, "model.pt"))
    with open(os.path.join(d, "args.json"), "w") as f:
        json.dump(flags, f, indent=1)
    m32 = su.create_model(**dict(flags, use_fp16=False))
    m32.load_state_dict({k: v.float() for k, v in sd.items()})
    m32.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    t = np.array([10.5, 700.0])
    np.save(os.path.join(d, "x.npy"), x)
    np.save(os.path.join(d, "t.npy"), t)
    with th.no_grad():
        out = m32(th.from_numpy(x), th.from_numpy(t))
    np.save(os.path.join(d, "out.npy"), out.numpy())
    n16 = sum(1 for v in sd.values() if v.dtype == th.float16)
    print("fp16 out", tuple(out.shape), f"{n16} of {len(sd)} tensors float16")


if __name__ == "__main__":
    main()
