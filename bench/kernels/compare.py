#!/usr/bin/python3
"""Side-by-side tables: convolutions: kernels.BenchmarkConv (im2col and oneDNN
primitives) against PyTorch (conv_torch.py) on the same shapes, measured
in one run, alternating, keeping each side's best GFLOP/s (the machine is
shared and noisy). Prints a Markdown table with the ratio ours/PyTorch.

    cd /work/main && /usr/bin/python3 bench/kernels/compare.py [--rounds 2]
"""
import argparse
import re
import subprocess
import sys
from collections import defaultdict

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--benchtime", default="10x")
args = ap.parse_args()

best = defaultdict(float)  # (impl, shape, pass) -> GFLOP/s
go_re = re.compile(r"^BenchmarkConv/(\w+)/(\w+)/(\w+)/(\w+)-\d+\s+\d+\s+[\d.]+ ns/op\s+([\d.]+) GFLOP/s")
torch_version = ""
for rnd in range(args.rounds):
    out = subprocess.run(["nice", "go", "test", "-run", "^$", "-bench", "^BenchmarkConv$",
                          "-benchtime", args.benchtime, "./kernels"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = go_re.match(line)
        if m:
            algo, blas, shape, pas, g = m.groups()
            key = (f"go {algo} ({blas})", shape, pas)
            best[key] = max(best[key], float(g))
    out = subprocess.run(["nice", "/usr/bin/python3", "bench/kernels/conv_torch.py", "--repeat", "2"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("torch "):
            torch_version = line
        f = line.split()
        if len(f) == 4 and f[1] in ("fwd", "bwd_data", "bwd_filter"):
            key = ("pytorch", f[0], f[1])
            best[key] = max(best[key], float(f[3]))
    out = subprocess.run(["nice", "go", "test", "-run", "^$", "-bench", "^Benchmark(GroupNormSiLU|Attention|ResBlock)$",
                          "-benchtime", "20x", "./kernels"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"^Benchmark(\w+(?:/\w+)?)/([\w+]+)-\d+\s+\d+\s+([\d.]+) ns/op", line)
        if m:
            key = ("go-ops", m.group(1), m.group(2))
            ms = float(m.group(3)) / 1e6
            best[key] = min(best.get(key, 1e9), ms)
    out = subprocess.run(["nice", "/usr/bin/python3", "bench/kernels/ops_torch.py"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) == 3:
            key = ("torch-ops", f[0], f[1])
            best[key] = min(best.get(key, 1e9), float(f[2]))
    print(f"round {rnd + 1} done", file=sys.stderr)

impls = sorted({k[0] for k in best if k[0] not in ("pytorch", "go-ops", "torch-ops")})
rows = sorted({(k[1], k[2]) for k in best if k[0] not in ("go-ops", "torch-ops")}, key=lambda r: (r[0], ["fwd", "bwd_data", "bwd_filter"].index(r[1])))
print(f"PyTorch: {torch_version}")
print("| shape | pass | " + " | ".join(impls) + " | pytorch | " + " | ".join(f"{i} / pytorch" for i in impls) + " |")
print("|" + " --- |" * (3 + 2 * len(impls)))
for shape, pas in rows:
    pt = best[("pytorch", shape, pas)]
    vals = [best[(i, shape, pas)] for i in impls]
    ratios = [f"{v / pt:.2f}" if pt else "-" for v in vals]
    print(f"| {shape} | {pas} | " + " | ".join(f"{v:.0f}" for v in vals) + f" | {pt:.0f} | " + " | ".join(ratios) + " |")

print()
print("| op (shape in kernels/bench_test.go) | pass | go ms | pytorch ms | speed-up go vs pytorch |")
print("| --- | --- | --- | --- | --- |")
for op in ("GroupNormSiLU", "Attention", "ResBlock/cifar", "ResBlock/small"):
    for pas in ("fwd", "bwd", "fwd+bwd"):
        g, p = best.get(("go-ops", op, pas)), best.get(("torch-ops", op, pas))
        if g and p:
            print(f"| {op} | {pas} | {g:.3f} | {p:.3f} | {p / g:.2f} |")
