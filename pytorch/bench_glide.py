"""Time one sampling step of GLIDE's base text-to-image model: glide-text2im's
own PyTorch code against ddpm's engine, side by side in one run.

usage: /usr/bin/python3 pytorch/bench_glide.py GLIDE_TEXT2IM_DIR [--batches 1] [--iters 3] [--threads 1,2] [--channels 192]

GLIDE_TEXT2IM_DIR is a checkout of openai/glide-text2im (tested at
69b5307); nothing of it is copied here. The script builds the base model
(base.pt's architecture: model_and_diffusion_defaults(), a 64x64
Text2ImUNet with 192 channels, 3 res blocks, attention at 32,16,8 with
64-channel heads, resblock up/down, scale-shift norm, and a 16-layer,
512-wide, 8-head text transformer over 128 tokens with final LayerNorm
and padding embedding) with model_creation.create_model at full size with
random weights (the repository's initialisation, the two embeddings it
leaves uninitialised (th.empty) drawn from N(0, 0.01), then every tensor
perturbed by N(0, 0.02) so no layer is zero), in float32 on the CPU
(use_fp16 is a GPU setting). It saves them as model.pt + args.json in a
temporary folder, starts adm's TestStepServer (go test -c) on the same
weights and inputs, one process per thread count, and alternates single
steps of the two sides round by round (so both see the same load on a
shared machine); it prints a table: median ms per step for each, the
ratio, and the relative L2 difference of ddpm's output from PyTorch's.

--batches counts images. Sampling with classifier-free guidance (the
text2im notebook, `ddpm sample --guidance`) runs each image's prompt and
the empty prompt in one batch, so a step for N images is one forward pass
at batch 2N: N rows of a real prompt (tokenised with glide-text2im's own
BPE encoder and padded to text_ctx with its mask) and N rows of the empty
prompt. The table gives both numbers.

PyTorch runs at its best setting on this machine (DESIGN.md, Performance
method): OPENBLAS_NUM_THREADS=1 before torch loads, glibc malloc told to
keep freed memory, and each of --threads (default 1,2: on a loaded 2-core
machine PyTorch's OpenMP threads spin and one thread can be faster), with
the best of each side compared too. Run it from the module root
with Debian's python3-torch 1.13 and python3-numpy, and Go
(glide-text2im's model files need only torch; its tokenizer needs the
regex module, Debian's python3-regex).
"""

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_libc = ctypes.CDLL("libc.so.6")
_libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
_libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD

import numpy as np  # noqa: E402
import torch as th  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adm_step_server import GoSide  # noqa: E402

PROMPT = "an oil painting of a corgi"


def torch_step(model, inp, nt):
    """ms of one forward pass (one sampling step) with nt threads."""
    th.set_num_threads(nt)
    x, t, tokens, mask = inp
    with th.no_grad():
        t0 = time.perf_counter()
        model(x, t, tokens=tokens, mask=mask)
        return (time.perf_counter() - t0) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("glide_text2im")
    ap.add_argument("--batches", default="1", help="images per step (each runs with its empty prompt: batch 2N)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--channels", type=int, default=192, help="num_channels (192 is the released model)")
    ap.add_argument("--threads", default="1,2", help="thread counts to time both sides with (each side's best is compared)")
    args = ap.parse_args()
    sys.path.insert(0, args.glide_text2im)
    from glide_text2im.model_creation import create_model, model_and_diffusion_defaults

    th.set_num_threads(2)
    th.manual_seed(0)
    flags = dict(model_and_diffusion_defaults(), num_channels=args.channels, use_fp16=False)
    model = create_model(**{k: v for k, v in flags.items()
                            if k not in ("diffusion_steps", "noise_schedule", "timestep_respacing")})
    with th.no_grad():
        model.positional_embedding.normal_(0, 0.01)
        model.padding_embedding.normal_(0, 0.01)
        for p in model.parameters():
            p.add_(th.randn_like(p) * 0.02)
    model.eval()
    params = sum(p.numel() for p in model.state_dict().values())
    tmp = tempfile.mkdtemp(prefix="bench_glide_")
    th.save(model.state_dict(), os.path.join(tmp, "model.pt"))
    with open(os.path.join(tmp, "args.json"), "w") as f:
        json.dump(flags, f)
    images = [int(b) for b in args.batches.split(",")]
    ctx = flags["text_ctx"]
    tok = model.tokenizer
    cond, cond_mask = tok.padded_tokens_and_mask(tok.encode(PROMPT), ctx)
    uncond, uncond_mask = tok.padded_tokens_and_mask([], ctx)
    rng = np.random.default_rng(1)
    inputs = {}
    for k in images:
        n = 2 * k  # the prompt's rows, then the empty prompt's
        x = rng.standard_normal((n, 3, 64, 64)).astype(np.float32)
        t = rng.integers(0, 1000, n).astype(np.float32)
        tokens = np.array([cond] * k + [uncond] * k, dtype=np.int64)
        mask = np.array([cond_mask] * k + [uncond_mask] * k, dtype=bool)
        np.save(os.path.join(tmp, f"x_{n}.npy"), x)
        np.save(os.path.join(tmp, f"t_{n}.npy"), t)
        np.save(os.path.join(tmp, f"tokens_{n}.npy"), tokens.astype(np.float32))
        np.save(os.path.join(tmp, f"mask_{n}.npy"), mask.astype(np.float32))
        inputs[n] = (th.from_numpy(x), th.from_numpy(t), th.from_numpy(tokens), th.from_numpy(mask))
        with th.no_grad():
            out = model(inputs[n][0], inputs[n][1], tokens=inputs[n][2], mask=inputs[n][3])
        np.save(os.path.join(tmp, f"out_{n}.npy"), out.numpy())

    threads = [int(v) for v in args.threads.split(",")]
    print(f"GLIDE base 64x64 (num_channels {args.channels}): {params} parameters; prompt {PROMPT!r} "
          f"({sum(cond_mask)} tokens) + the empty prompt per image; files in {tmp}", flush=True)
    binary = os.path.join(tmp, "adm.test")
    subprocess.run(["go", "test", "-c", "-o", binary, "./adm/"], check=True)
    t0 = time.time()
    goside = {nt: GoSide(binary, tmp, nt) for nt in threads}
    print(f"go side loaded in {time.time() - t0:.0f} s", flush=True)
    times = {}  # (side, n, nt) -> [ms]
    errs = {}
    for rnd in range(args.iters + 1):  # round 0 warms both sides up
        for k in images:
            n = 2 * k
            for nt in threads:
                tp = torch_step(model, inputs[n], nt)
                tg, e = goside[nt].step(n)
                errs[n] = e
                if rnd > 0:
                    times.setdefault(("torch", n, nt), []).append(tp)
                    times.setdefault(("go", n, nt), []).append(tg)
                print(f"round {rnd} images {k} (batch {n}) threads {nt}: pytorch {tp:.0f} ms, ddpm {tg:.0f} ms "
                      f"(rel L2 {e:.2g})", flush=True)
    for g in goside.values():
        g.close()

    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print(f"ms per sampling step (one forward pass), median of {args.iters} alternating rounds; PyTorch {th.__version__}")
    print()
    print("| images | batch (prompt + empty prompt) | threads | glide-text2im PyTorch | ddpm | PyTorch / ddpm "
          "| ddpm output rel L2 vs PyTorch |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for k in images:
        n = 2 * k
        for nt in threads:
            pt, g = med[("torch", n, nt)], med[("go", n, nt)]
            print(f"| {k} | {n} | {nt} | {pt:.0f} | {g:.0f} | {pt / g:.2f} | {errs[n]:.2g} |")
        if len(threads) > 1:
            bp = min(med[("torch", n, nt)] for nt in threads)
            bg = min(med[("go", n, nt)] for nt in threads)
            print(f"| {k} | {n} | best of each | {bp:.0f} | {bg:.0f} | {bp / bg:.2f} | |")


if __name__ == "__main__":
    main()
