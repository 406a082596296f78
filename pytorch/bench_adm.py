"""Time one sampling step of OpenAI's ADM 64x64 UNet: guided-diffusion's own
PyTorch code against ddpm's engine, side by side in one run.

usage: /usr/bin/python3 pytorch/bench_adm.py GUIDED_DIFFUSION_DIR [--batches 1,4] [--iters 3] [--threads 1,2] [--channels 192]

GUIDED_DIFFUSION_DIR is a checkout of openai/guided-diffusion (tested at
22e0df8); nothing of it is copied here. The script builds the released
64x64_diffusion.pt architecture with the README's flags (192 channels,
3 res blocks, attention at 32,16,8 with 64-channel heads, resblock up/down,
new attention order, scale-shift norm, learned sigma, class-conditional)
at full size with random weights (the repository's initialisation, then
every tensor perturbed by N(0, 0.02) so no layer is zero), in float32 on
the CPU (use_fp16 is a GPU setting). It saves them as model.pt + args.json
in a temporary folder, starts adm's TestStepServer (go test -c) on the
same weights and inputs, one process per thread count, and alternates
single steps of the two sides round by round (so both see the same load
on a shared machine); it prints a table: median ms per step for each, the
ratio, and the relative L2 difference of ddpm's output from PyTorch's.

PyTorch runs at its best setting on this machine (DESIGN.md, Performance
method): OPENBLAS_NUM_THREADS=1 before torch loads, glibc malloc told to
keep freed memory, and each of --threads (default 1,2: on a loaded 2-core
machine PyTorch's OpenMP threads spin and one thread can be faster), with
the best of each side compared too. Run it from the module root
with Debian's python3-torch 1.13 and python3-numpy, and Go.
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

FLAGS = dict(
    image_size=64, num_channels=192, num_res_blocks=3, channel_mult="", learn_sigma=True, class_cond=True,
    use_checkpoint=False, attention_resolutions="32,16,8", num_heads=4, num_head_channels=64,
    num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.1, resblock_updown=True, use_fp16=False,
    use_new_attention_order=True)


def torch_step(model, inp, nt):
    """ms of one forward pass (one sampling step) with nt threads."""
    th.set_num_threads(nt)
    x, t, y = inp
    with th.no_grad():
        t0 = time.perf_counter()
        model(x, t, y)
        return (time.perf_counter() - t0) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("guided_diffusion")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--channels", type=int, default=192, help="num_channels (192 is the released model)")
    ap.add_argument("--threads", default="1,2", help="thread counts to time both sides with (each side's best is compared)")
    args = ap.parse_args()
    sys.path.insert(0, args.guided_diffusion)
    from guided_diffusion.script_util import create_model

    th.set_num_threads(2)
    th.manual_seed(0)
    flags = dict(FLAGS, num_channels=args.channels)
    model = create_model(**flags)
    with th.no_grad():
        for p in model.parameters():
            p.add_(th.randn_like(p) * 0.02)
    model.eval()
    params = sum(p.numel() for p in model.state_dict().values())
    tmp = tempfile.mkdtemp(prefix="bench_adm_")
    th.save(model.state_dict(), os.path.join(tmp, "model.pt"))
    with open(os.path.join(tmp, "args.json"), "w") as f:
        json.dump(dict(flags, diffusion_steps=1000, noise_schedule="cosine"), f)
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(1)
    inputs = {}
    for n in batches:
        x = rng.standard_normal((n, 3, 64, 64)).astype(np.float32)
        t = rng.integers(0, 1000, n).astype(np.float32)
        y = rng.integers(0, 1000, n).astype(np.float32)
        np.save(os.path.join(tmp, f"x_{n}.npy"), x)
        np.save(os.path.join(tmp, f"t_{n}.npy"), t)
        np.save(os.path.join(tmp, f"y_{n}.npy"), y)
        with th.no_grad():
            out = model(th.from_numpy(x), th.from_numpy(t), th.from_numpy(y).long())
        np.save(os.path.join(tmp, f"out_{n}.npy"), out.numpy())
        inputs[n] = (th.from_numpy(x), th.from_numpy(t), th.from_numpy(y).long())

    threads = [int(v) for v in args.threads.split(",")]
    print(f"ADM 64x64 (num_channels {args.channels}): {params} parameters; files in {tmp}", flush=True)
    binary = os.path.join(tmp, "adm.test")
    subprocess.run(["go", "test", "-c", "-o", binary, "./adm/"], check=True)
    t0 = time.time()
    goside = {nt: GoSide(binary, tmp, nt) for nt in threads}
    print(f"go side loaded in {time.time() - t0:.0f} s", flush=True)
    times = {}  # (side, n, nt) -> [ms]
    errs = {}
    for rnd in range(args.iters + 1):  # round 0 warms both sides up
        for n in batches:
            for nt in threads:
                tp = torch_step(model, inputs[n], nt)
                tg, e = goside[nt].step(n)
                errs[n] = e
                if rnd > 0:
                    times.setdefault(("torch", n, nt), []).append(tp)
                    times.setdefault(("go", n, nt), []).append(tg)
                print(f"round {rnd} batch {n} threads {nt}: pytorch {tp:.0f} ms, ddpm {tg:.0f} ms (rel L2 {e:.2g})", flush=True)
    for g in goside.values():
        g.close()

    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print(f"ms per sampling step (one forward pass), median of {args.iters} alternating rounds; PyTorch {th.__version__}")
    print()
    print("| batch | threads | guided-diffusion PyTorch | ddpm | PyTorch / ddpm | ddpm output rel L2 vs PyTorch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in batches:
        for nt in threads:
            pt, g = med[("torch", n, nt)], med[("go", n, nt)]
            print(f"| {n} | {nt} | {pt:.0f} | {g:.0f} | {pt / g:.2f} | {errs[n]:.2g} |")
        bp = min(med[("torch", n, nt)] for nt in threads)
        bg = min(med[("go", n, nt)] for nt in threads)
        print(f"| {n} | best of each | {bp:.0f} | {bg:.0f} | {bp / bg:.2f} | |")


if __name__ == "__main__":
    main()
