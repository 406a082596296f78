#!/usr/bin/env bash
# gpu-check.sh: the one-call GPU check of the CUDA backend (issue 10).
#
#   bash bench/gpu-check.sh --build      # here (Go, no GPU): static binaries into bin/gpu/
#   bash bench/gpu-check.sh --remote     # here: --build, then print the single device call to make
#   bash bench/gpu-check.sh --gpu        # on the GPU machine (no Go): checks, timings, the table last
#   bash bench/gpu-check.sh --dry-run    # here: --build, the plan, then the --gpu steps with the CPU
#                                        #   emulator (GPU timings skipped), the table skeleton, the self-test
#   bash bench/gpu-check.sh --self-test  # the table parser on logs in every step's exact format
#
# The GPU machine gets the repository (tracked files) plus bin/gpu/ (ignored
# by .gitignore's /bin/, so the device tool must carry it; the binaries are
# gzipped to fit its 64 MiB). --remote prints the call, e.g.
#   run(command="bash bench/gpu-check.sh --gpu", carry=["bin/gpu"], timeout_s=360)
# The --gpu part never runs past its budget (GPU_CHECK_BUDGET, default 330 s):
# every step runs under `timeout` with min(its own limit, the budget left
# less a reserve for the table), and a step with too little time left is
# skipped, saying so. Logs go to $OUT/gpu-check/ (bin/gpu/out/ without $OUT).
#
# Steps (--gpu), correctness first:
#   info     nvidia-smi, the torch version, the cuBLAS/cuDNN directories put on LD_LIBRARY_PATH
#   devices  ddpm devices --device cuda --check (the driver JIT-compiles the embedded PTX)
#   ops      cuda.test: every op against kernels.CPU on seeded inputs in NaN guard bands, in fp32,
#            tf32, bf16 and fp16 (elementwise |got-want| <= eps (rms(want) + |want|)), cuDNN
#            algorithm choices, CUDA graphs, the audit tests
#   model    unet.test: the real UNet (tiny, the diffusers fixture, DDPM CIFAR-10) forward and one
#            training step on the GPU against the CPU, in every precision, through CUDA graphs
#   train    train.test: the trainer on the GPU against the CPU; fp16 with loss scaling
#   gexec    gexec.test: the executor's gradients on the GPU
#   goops    cuda.test -bench GPU: the hot ops at batch 128 (conv per engine, GroupNorm, attention, launch)
#   gotf32   ddpm bench: DDPM CIFAR-10 UNet, batch 128: forward, 50-step DDIM sampling, train step (tf32)
#   torch    pytorch/bench_gpu.py: the same ops and the same UNet (pytorch/unet2d.py's diffusers twin)
#            in PyTorch eager (cudnn.benchmark, TF32; bf16 by autocast): sampling and train step
#   gobf16   ddpm bench --precision bf16
#   table    the table, last
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=bin/gpu
BUDGET=${GPU_CHECK_BUDGET:-330}
RESERVE=15 # seconds kept for the table and timeout's kill grace

build() {
	set -e
	rm -rf "$BIN"
	mkdir -p "$BIN"
	echo "gpu-check: building cgo-free binaries into $BIN (CGO_ENABLED=0, stripped)"
	for p in cuda gexec unet train; do
		CGO_ENABLED=0 go test -c -ldflags='-s -w' -o "$BIN/$p.test" "./$p"
	done
	CGO_ENABLED=0 go build -ldflags='-s -w' -o "$BIN/ddpm" ./cmd/ddpm
	git rev-parse HEAD >"$BIN/REVISION" 2>/dev/null || true
	git status --porcelain --untracked-files=no | grep -q . && echo "(with uncommitted changes)" >>"$BIN/REVISION"
	# The diffusers fixture, for the whole-UNet checks (TestGPUFixture).
	if [ -d ../shared/fixtures/diffusers-unet-small ]; then
		mkdir -p "$BIN/fixture"
		cp ../shared/fixtures/diffusers-unet-small/{config.json,diffusion_pytorch_model.safetensors,x.npy,timesteps.npy,out.npy} "$BIN/fixture/"
	fi
	# The device tool carries at most 64 MiB: the binaries travel gzipped.
	gzip -9 "$BIN"/*.test "$BIN/ddpm"
	local mib
	mib=$(du -sm "$BIN" | cut -f1)
	ls -la "$BIN"
	echo "gpu-check: $BIN is $mib MiB (the device tool carries 64 MiB)"
	[ "$mib" -lt 62 ] || {
		echo "gpu-check: $BIN too large to carry"
		return 1
	}
	set +e
}

# unpack gunzips the carried binaries (on the GPU machine, or for the dry run).
unpack() {
	for f in "$BIN"/*.gz; do
		[ -e "$f" ] || continue
		gunzip -f "$f" && chmod +x "${f%.gz}"
	done
}

# pick_python prints a python3 that imports torch (the GPU machine's), else any python3.
pick_python() {
	for p in python3 /usr/bin/python3 python; do
		if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' >/dev/null 2>&1; then
			echo "$p"
			return
		fi
	done
	echo python3
}

# lib_dirs prints directories holding libcublas.so.* or libcudnn.so.* (pip wheels included).
lib_dirs() {
	local py=$1
	{
		for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
			ls "$d"/libcublas.so.* "$d"/libcudnn.so.* >/dev/null 2>&1 && echo "$d"
		done
		site=$("$py" -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null)
		for s in $site; do
			[ -d "$s/nvidia" ] && find "$s/nvidia" -maxdepth 3 \( -name 'libcublas.so.*' -o -name 'libcudnn.so.*' \) -printf '%h\n' 2>/dev/null
		done
	} | awk '!seen[$0]++'
}

# The steps: name, its own time limit (s), the least time worth starting it with (s), what it runs.
STEPS=(
	"info|25|5|nvidia-smi, torch version, library directories"
	"devices|30|5|ddpm devices --device cuda --check"
	"ops|70|20|cuda.test -test.run 'TestOps|TestConv|TestGroupNormKernel1|TestPrecisionRounding|TestGraph|TestPick|TestCUDNN|TestEmbeddingBounds|TestTranspose12Grid|TestFreeOtherThread|TestNoLibraryMessage|TestPTXKernels'"
	"model|70|20|unet.test -test.run 'TestDevice|TestGPUPrecisions|TestGPUFixture|TestGPUCIFAR10'"
	"train|40|15|train.test -test.run 'TestGPUMatchesCPU|TestGPUFP16LossScaling|TestLossScaling'"
	"gexec|20|5|gexec.test -test.run 'CUDA'"
	"goops|45|20|cuda.test -test.run '^\$' -test.bench GPU -test.benchtime 10x"
	"gotf32|60|25|ddpm bench --preset ddpm-cifar10 --batch 128 --device cuda --precision tf32 --iters 5 --warmup 2 --sample-steps 50 --train --json"
	"torch|90|30|pytorch/bench_gpu.py --ops --model ddpm-cifar10 --batch 128 --steps 50 --precisions tf32,bf16"
	"gobf16|50|25|ddpm bench ... --precision bf16 (same flags)"
)

plan() {
	local total=0
	echo "gpu-check plan: one device call, budget $BUDGET s (reserve $RESERVE s for the table); each step"
	echo "runs with timeout min(limit, budget left) and is skipped with less than its minimum left:"
	printf '  %-8s %6s %5s  %s\n' step limit min command
	for s in "${STEPS[@]}"; do
		IFS='|' read -r name lim min what <<<"$s"
		printf '  %-8s %5ss %4ss  %s\n' "$name" "$lim" "$min" "$what"
		total=$((total + lim))
	done
	echo "  (limits add to $total s; the budget clamps them: the later timing steps shrink or are skipped first)"
}

# step NAME LOG CMD...: runs CMD under the clamped timeout of NAME's row in STEPS,
# or skips it; the reason of a skip or a timeout goes to $OUT_DIR/skipped.txt.
step() {
	local name=$1 log=$2
	shift 2
	local lim=0 min=0 row
	for row in "${STEPS[@]}"; do
		IFS='|' read -r n l m _ <<<"$row"
		[ "$n" = "$name" ] && lim=$l && min=$m
	done
	local left=$((BUDGET - (SECONDS - T0) - RESERVE))
	local t=$((lim < left ? lim : left))
	if [ "$t" -lt "$min" ] || [ "$t" -lt 1 ]; then
		echo "skip: $name: ${left} s of the budget left, it needs at least $min s" | tee -a "$OUT_DIR/skipped.txt"
		echo "SKIPPED: $left s of the budget left" >"$log"
		return 0
	fi
	echo "== $name (timeout $t s; $((SECONDS - T0)) s used of $BUDGET)"
	local s0=$SECONDS
	timeout -k 3 "$t" "$@" >"$log" 2>&1
	local rc=$?
	echo "exit $rc" >>"$log"
	if [ $rc = 124 ] || [ $rc = 137 ]; then
		echo "timeout: $name: stopped after its $t s limit" | tee -a "$OUT_DIR/skipped.txt"
	fi
	echo "   $name: exit $rc in $((SECONDS - s0)) s"
}

# dryskip NAME WHY: a step the dry run cannot do (it needs the GPU).
dryskip() {
	echo "skip: $1: $2" | tee -a "$OUT_DIR/skipped.txt"
	echo "SKIPPED: $2" >"$OUT_DIR/$1.log"
}

# run_steps [dry]: the --gpu procedure; with dry, on this machine's CPU emulator.
run_steps() {
	local dry=${1:-}
	T0=$SECONDS
	OUT_DIR=${OUT:-$ROOT/$BIN/out}/gpu-check
	[ -n "$dry" ] && OUT_DIR=${OUT:-$ROOT/$BIN/dry}/gpu-check
	rm -rf "$OUT_DIR"
	mkdir -p "$OUT_DIR"
	: >"$OUT_DIR/skipped.txt"
	[ -n "$dry" ] && echo "dry run: no GPU; the correctness steps run on the CPU emulator, the GPU timings are skipped" >"$OUT_DIR/dry.txt"
	unpack
	if [ ! -x "$BIN/cuda.test" ]; then
		echo "gpu-check: $BIN/cuda.test missing: run 'bash bench/gpu-check.sh --build' here and carry bin/gpu" | tee "$OUT_DIR/summary.txt"
		return 1
	fi
	local PY
	PY=$(pick_python)
	local dirs
	dirs=$(lib_dirs "$PY" | paste -sd: -)
	[ -n "$dirs" ] && export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	step info "$OUT_DIR/info.txt" bash -c '
		echo "revision: $(tr "\n" " " <'"$BIN"'/REVISION 2>/dev/null)"
		if command -v nvidia-smi >/dev/null; then
			echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
		else
			echo "gpu: none (no nvidia-smi)"
		fi
		'"$PY"' -c "import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda)" 2>&1 | tail -1
		echo "library dirs: '"$dirs"'"'
	cat "$OUT_DIR/info.txt"
	local fixture=""
	[ -d "$BIN/fixture" ] && fixture=$ROOT/$BIN/fixture
	if [ -n "$dry" ]; then
		dryskip devices "dry run: needs the NVIDIA driver"
	else
		step devices "$OUT_DIR/devices.log" "$BIN/ddpm" devices --device cuda --check
	fi
	step ops "$OUT_DIR/ops.log" bash -c "cd cuda && exec ../$BIN/cuda.test -test.v -test.count 1 -test.run \
'TestOps|TestConv|TestGroupNormKernel1|TestPrecisionRounding|TestGraph|TestPick|TestCUDNN|TestEmbeddingBounds|TestTranspose12Grid|TestFreeOtherThread|TestNoLibraryMessage|TestPTXKernels'"
	grep -E '^(--- FAIL|FAIL|ok|PASS)|^    --- FAIL|no GPU|guard band|modified' "$OUT_DIR/ops.log" | tail -15
	step model "$OUT_DIR/model.log" env DDPM_UNET_FIXTURE="$fixture" bash -c "cd unet && exec ../$BIN/unet.test -test.v -test.count 1 \
-test.run 'TestDevice|TestGPUPrecisions|TestGPUFixture|TestGPUCIFAR10'"
	grep -E '^(--- |FAIL|ok|PASS)|relative L2|^    --- FAIL' "$OUT_DIR/model.log" | tail -20
	step train "$OUT_DIR/train.log" bash -c "cd train && exec ../$BIN/train.test -test.v -test.count 1 -test.run 'TestGPUMatchesCPU|TestGPUFP16LossScaling|TestLossScaling'"
	grep -E '^(--- |FAIL|ok|PASS)' "$OUT_DIR/train.log" | tail -8
	step gexec "$OUT_DIR/gexec.log" bash -c "cd gexec && exec ../$BIN/gexec.test -test.v -test.count 1 -test.run 'CUDA'"
	grep -E '^(--- |FAIL|ok|PASS)' "$OUT_DIR/gexec.log" | tail -4
	local bench=(--preset ddpm-cifar10 --batch 128 --device cuda --iters 5 --warmup 2 --sample-steps 50 --train --json)
	if [ -n "$dry" ]; then
		dryskip goops "dry run: GPU timings need the GPU (the emulator runs batch 128 for hours)"
		# The same command on the CPU with a small model, so the JSON and the table are exercised.
		step gotf32 "$OUT_DIR/gotf32.log" "$BIN/ddpm" bench --preset mnist --batch 2 --device cpu --iters 1 --warmup 0 --sample-steps 2 --train --json
		step torch "$OUT_DIR/torch.jsonl" "$PY" pytorch/bench_gpu.py --cpu-smoke --model "${fixture:-ddpm-cifar10}/config.json"
		[ -z "$fixture" ] && step torch "$OUT_DIR/torch.jsonl" "$PY" pytorch/bench_gpu.py --cpu-smoke
		dryskip gobf16 "dry run: bf16 needs the GPU (the CPU refuses it)"
	else
		step goops "$OUT_DIR/goops.log" bash -c "cd cuda && exec ../$BIN/cuda.test -test.run '^\$' -test.bench GPU -test.benchtime 10x"
		grep -E '^Benchmark|FAIL|SKIP' "$OUT_DIR/goops.log" | head -20
		step gotf32 "$OUT_DIR/gotf32.log" "$BIN/ddpm" bench "${bench[@]}" --precision tf32
		tail -2 "$OUT_DIR/gotf32.log"
		step torch "$OUT_DIR/torch.jsonl" "$PY" pytorch/bench_gpu.py --ops --model ddpm-cifar10 --batch 128 --steps 50 --precisions tf32,bf16
		cat "$OUT_DIR/torch.jsonl"
		step gobf16 "$OUT_DIR/gobf16.log" "$BIN/ddpm" bench "${bench[@]}" --precision bf16
		tail -2 "$OUT_DIR/gobf16.log"
	fi
	echo "== table ($((SECONDS - T0)) s used of $BUDGET)"
	table "$PY" "$OUT_DIR"
	echo "gpu-check: took $((SECONDS - T0)) s; logs in $OUT_DIR"
}

# table PY DIR prints the summary table from the logs in DIR.
table() {
	"$1" - "$2" <<'PYEOF' | tee "$2/table.txt"
import json, os, re, sys
out = sys.argv[1]
def read(p):
    try:
        return open(os.path.join(out, p)).read()
    except OSError:
        return ""
def skipped(log):
    m = re.search(r"^SKIPPED: (.*)$", log, re.M)
    return m.group(1) if m else None
def verdict(log, test):
    if skipped(log):
        return "skip (%s)" % skipped(log)
    if re.search(r"^\s*--- FAIL: %s\b" % re.escape(test), log, re.M):
        return "FAIL"
    if re.search(r"^\s*--- SKIP: %s\b" % re.escape(test), log, re.M):
        # go test -v streams a test's log before its "--- SKIP" line.
        m = re.search(r"^=== RUN   %s\n((?:\s+\S+\.go:\d+: .*\n)+)\s*--- SKIP: %s\b" % (re.escape(test), re.escape(test)), log, re.M)
        why = re.sub(r"^\s+\S+\.go:\d+: ", "", m.group(1).rstrip("\n").splitlines()[-1]) if m else "no reason given"
        return "skip (%s)" % why
    if re.search(r"^\s*--- PASS: %s\b" % re.escape(test), log, re.M):
        return "pass"
    return "not run" if "exit 124" not in log else "timeout"
info = read("info.txt")
gpu = re.search(r"^gpu: (.*)$", info, re.M)
tv = re.search(r"^torch (\S+) cuda (\S+)", info, re.M)
rev = re.search(r"^revision: (.*)$", info, re.M)
dry = read("dry.txt").strip()
print("GPU check: %s" % (gpu.group(1) if gpu else "?"))
print("revision %s; torch %s" % (rev.group(1).strip() if rev else "?", "%s (CUDA %s)" % tv.groups() if tv else "?"))
if dry:
    print("DRY RUN: " + dry)
print()
# Correctness.
ops = read("ops.log")
npass = len(re.findall(r"^\s*--- PASS: ", ops, re.M))
nfail = len(re.findall(r"^\s*--- FAIL: ", ops, re.M))
worst = {}
for name, r, mode in re.findall(r"op (\S+)\s+worst (\S+) of tol eps \S+ \((\w+)\)", ops):
    worst[mode] = max(worst.get(mode, 0.0), float(r))
choices = {}
for line in sorted(set(re.findall(r"cudnn choice \(\w+\): .*", ops))):
    why = line.rsplit(": ", 1)[1]
    choices[why] = choices.get(why, 0) + 1
model, train, gx = read("model.log"), read("train.log"), read("gexec.log")
print("%-46s %s" % ("correctness (GPU against the CPU)", "result"))
if skipped(ops):
    print("  %-44s skip (%s)" % ("per-op, fp32/tf32/bf16/fp16", skipped(ops)))
else:
    print("  %-44s %d passed, %d failed%s" % ("per-op, fp32/tf32/bf16/fp16 (subtests)", npass, nfail, "" if "exit 0" in ops else " (exit %s)" % (re.findall(r"^exit (\d+)", ops, re.M) or ["?"])[-1]))
    print("  %-44s %s" % ("  worst |err| / tolerance by precision", ", ".join("%s %.2f" % kv for kv in sorted(worst.items())) or "n/a"))
    print("  %-44s %s" % ("  cuDNN algorithms chosen", ", ".join("%d %s" % (v, k) for k, v in sorted(choices.items())) or "none (no cuDNN)"))
    print("  %-44s %s" % ("  CUDA graphs (TestGraphOps)", verdict(ops, "TestGraphOps")))
for test, what in [("TestGPUPrecisions", "tiny UNet, 4 precisions, graphs"), ("TestDevice", "tiny UNet fp32 forward + train step"),
                   ("TestGPUFixture", "diffusers fixture forward + train step"), ("TestGPUCIFAR10", "DDPM CIFAR-10 fp32 forward + train step")]:
    print("  %-44s %s" % (what, verdict(model, test)))
for m in re.finditer(r"whole-UNet forward (\w+) (\w+), GPU vs CPU: relative L2 error (\S+)(?: \(bound (\S+)\))?", model):
    print("  %-44s rel L2 %s%s" % ("    forward %s %s" % m.group(1, 2), m.group(3), " (bound %s)" % m.group(4) if m.group(4) else ""))
for m in re.finditer(r"train step (\w+) (\w+), GPU vs CPU: loss (\S+) vs (\S+), gradient relative L2 (\S+)", model):
    print("  %-44s loss %s vs %s, gradients rel L2 %s" % ("    train step %s %s" % m.group(1, 2), m.group(3), m.group(4), m.group(5)))
for test, what in [("TestGPUMatchesCPU", "trainer fp32, 5 steps"), ("TestGPUFP16LossScaling", "trainer fp16 with loss scaling"),
                   ("TestLossScalingOverflow", "loss scaling: injected overflow skipped")]:
    print("  %-44s %s" % (what, verdict(train, test)))
print("  %-44s %s" % ("executor gradients (gexec)", verdict(gx, "TestGradCUDA")))
print()
# Ops.
go, torch, tinfo = {}, {}, {}
for name, rest in re.findall(r"^Benchmark(GPU\S+?)(?:-\d+)?\s+\d+\s+(.*)$", read("goops.log"), re.M):
    m = re.search(r"([\d.]+) ms/call", rest)
    if m:
        go[name[3:]] = float(m.group(1))
for line in read("torch.jsonl").splitlines():
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if j.get("name") == "torch":
        tinfo = j
    else:
        torch[(j.get("name"), j.get("precision"))] = j
def fmt(v):
    if v is None:
        return "%10s" % "-"
    return "%10.4f" % v if v < 0.1 else "%10.3f" % v
print("%-28s %10s %10s %12s" % ("op (batch 128, tf32)", "Go ms", "PyTorch ms", "PyTorch/Go"))
if skipped(read("goops.log")):
    print("  (Go ops: %s)" % skipped(read("goops.log")))
names = sorted(go) or ["Conv3x3Fwd/cudnn", "Conv3x3Fwd/im2col", "Conv3x3Fwd/im2col-autotune", "Conv3x3Bwd/cudnn",
                       "Conv3x3Bwd/im2col", "Conv3x3Bwd/im2col-autotune", "GroupNormSiLUFwd", "GroupNormSiLUBwd",
                       "AttentionFwd", "AttentionBwd", "Launch/eager", "Launch/graph100"]
for name in names:
    g = go.get(name)
    t = torch.get((name.split("/")[0], None), {}).get("ms")
    print("%-28s %s %s %12s" % (name, fmt(g), fmt(t), "%.2fx" % (t / g) if g and t else "-"))
print()
def gobench(p):
    log = read(p)
    for line in reversed(log.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line), None
            except ValueError:
                pass
    return {}, skipped(log) or ("failed: " + log.strip().splitlines()[-2] if len(log.strip().splitlines()) > 1 else "not run")
g32, why32 = gobench("gotf32.log")
g16, why16 = gobench("gobf16.log")
print("whole model: %s, batch %s" % (g32.get("model", "preset:ddpm-cifar10"), g32.get("batch", 128)))
print("  %-32s %18s %18s %12s" % ("", "Go", "PyTorch eager", "Go/PyTorch"))
def row(what, gv, tv, unit, higher_better=True):
    r = "-"
    if gv and tv and not dry:  # the dry run times different models on the CPU
        r = "%.2fx" % (gv / tv if higher_better else tv / gv)
    print("  %-32s %18s %18s %12s" % (what, "%.1f %s" % (gv, unit) if gv else "-", "%.1f %s" % (tv, unit) if tv else "-", r))
for prec, g in [("tf32", g32), ("bf16", g16)]:
    ts = torch.get(("SampleDDIM", prec), {}) or (torch.get(("SampleDDIM", "fp32"), {}) if dry and prec == "tf32" else {})
    steps = g.get("sample_steps") or ts.get("steps") or 50
    label = "fp32 on the CPU (dry run)" if dry and prec == "tf32" and not g.get("precision") else prec
    row("sampling %d DDIM steps, %s" % (steps, label), g.get("sample_images_per_sec"), ts.get("images_per_s"), "img/s")
for prec, g in [("tf32", g32), ("bf16", g16)]:
    row("forward, %s" % prec, g.get("forward_ms_median"), None, "ms", False)
tt = torch.get(("TrainStep", "tf32"), {}) or torch.get(("TrainStep", "fp32"), {})
row("train step, tf32 (PyTorch/Go)", g32.get("train_step_ms_median"), tt.get("ms"), "ms", False)
row("train step, bf16", g16.get("train_step_ms_median"), None, "ms", False)
print("  %-32s %s" % ("Go device", g32.get("device") or "-"))
print("  %-32s %s" % ("CUDA graphs (Go sampling)", g32.get("graph_stats") or "-"))
print("  %-32s %s" % ("PyTorch", "%s %s" % (tinfo.get("version", ""), tinfo.get("device", tinfo.get("skip", "-")))))
for w, why in [("Go tf32", why32), ("Go bf16", why16)]:
    if why:
        print("  (%s: %s)" % (w, why))
sk = read("skipped.txt").strip()
if sk:
    print()
    print("skipped or cut short:")
    for line in sk.splitlines():
        print("  " + line)
PYEOF
}

# selftest checks the table on logs in the exact formats the steps write
# (go test -v of these tests, go test -bench of these benchmarks, ddpm
# bench --json, pytorch/bench_gpu.py), with their real names.
selftest() {
	local py=$1 d=$BIN/selftest/gpu-check
	rm -rf "$d"
	mkdir -p "$d"
	printf 'revision: abc123\ngpu: NVIDIA H200, 580.65.06, 143771 MiB\ntorch 2.8.0+cu128 cuda 12.8\n' >"$d/info.txt"
	: >"$d/skipped.txt"
	cat >"$d/ops.log" <<'LOGEOF'
=== RUN   TestOpsFP32
=== RUN   TestOpsFP32/Conv2D/3x3
    ops_test.go:421: op Conv2D/3x3                       worst 0.21 of tol eps 1e-05 (fp32)
=== RUN   TestOpsFP32/Linear
    ops_test.go:421: op Linear                           worst 0.05 of tol eps 1e-05 (fp32)
    ops_test.go:494: cudnn choice (fp32): fwd N3 C5 9x11 K7 3x3/1: algo 1 math 3: first deterministic
    ops_test.go:494: cudnn choice (fp32): bwd-data N3 C5 9x11 K7 3x3/1: algo 1 math 3: first deterministic
--- PASS: TestOpsFP32 (0.10s)
    --- PASS: TestOpsFP32/Conv2D/3x3 (0.01s)
    --- PASS: TestOpsFP32/Linear (0.01s)
=== RUN   TestOpsBF16
=== RUN   TestOpsBF16/Attention/1head
    ops_test.go:421: op Attention/1head                  worst 0.37 of tol eps 0.03 (bf16)
    ops_test.go:412: output 0: 3 of 4096 values out of tolerance eps 0.03 (abs 0.0061 + rel 0.03); worst [7] = 1.5, want 1.4
--- FAIL: TestOpsBF16 (0.10s)
    --- FAIL: TestOpsBF16/Attention/1head (0.01s)
=== RUN   TestOpsTF32
    ops_test.go:494: cudnn choice (tf32): fwd N3 C5 9x11 K7 3x3/1: algo 6 math 1: fastest
--- PASS: TestOpsTF32 (0.10s)
=== RUN   TestGraphOps
--- PASS: TestGraphOps (0.20s)
FAIL
exit 1
LOGEOF
	cat >"$d/model.log" <<'LOGEOF'
=== RUN   TestGPUFixture/bf16
    gpu_test.go:166: whole-UNet forward fixture bf16, GPU vs CPU: relative L2 error 0.00678 (bound 0.078); vs diffusers 0.00678; graphs {Eager:29 Captured:1 Replayed:1 Failed:0 Graphs:1}
    gpu_test.go:182: train step fixture fp32, GPU vs CPU: loss 1.100024 vs 1.100024, gradient relative L2 9.29e-07
--- PASS: TestGPUFixture (3.00s)
    gpu_test.go:203: whole-UNet forward cifar10 fp32, GPU vs CPU: relative L2 error 3.1e-07
--- PASS: TestGPUCIFAR10 (9.00s)
=== RUN   TestGPUPrecisions
--- PASS: TestGPUPrecisions (1.00s)
=== RUN   TestDevice
    device_test.go:63: no GPU or emulator: nope
--- SKIP: TestDevice (0.00s)
exit 0
LOGEOF
	printf -- '--- PASS: TestGPUMatchesCPU (1.0s)\n--- PASS: TestGPUFP16LossScaling (1.0s)\n--- PASS: TestLossScalingOverflow (0.4s)\nexit 0\n' >"$d/train.log"
	printf -- '--- PASS: TestGradCUDA (0.1s)\nexit 0\n' >"$d/gexec.log"
	cat >"$d/goops.log" <<'LOGEOF'
BenchmarkGPUConv3x3Fwd/cudnn-16         	      10	   2000000 ns/op	         2.000 ms/call	     75000 GFLOP/s
BenchmarkGPUConv3x3Fwd/im2col-16        	      10	   4000000 ns/op	         4.000 ms/call	     37500 GFLOP/s
BenchmarkGPUConv3x3Fwd/im2col-autotune-16 	      10	   3000000 ns/op	         3.000 ms/call	     50000 GFLOP/s
BenchmarkGPULaunch/eager-16             	      10	      6000 ns/op	         0.006000 ms/call
BenchmarkGPULaunch/graph100-16          	      10	    150000 ns/op	         0.001500 ms/call
LOGEOF
	printf '{"device":"cuda:0 NVIDIA H200 (cuBLAS 130001, cuDNN 91002 conv, tf32), graphs","model":"preset:ddpm-cifar10","batch":128,"params":35746307,"forward_ms_median":20,"images_per_sec":6400,"train_step_ms_median":100,"train_images_per_sec":1280,"iters":5,"warmup":2,"const_weights":false,"precision":"tf32","graphs":true,"sample_steps":50,"sample_ms":1000,"sample_images_per_sec":128,"graph_stats":"{Eager:2 Captured:1 Replayed:50 Failed:0 Graphs:1}"}\nexit 0\n' >"$d/gotf32.log"
	printf 'SKIPPED: 12 s of the budget left\n' >"$d/gobf16.log"
	echo "skip: gobf16: 12 s of the budget left, it needs at least 25 s" >"$d/skipped.txt"
	cat >"$d/torch.jsonl" <<'LOGEOF'
{"name": "torch", "version": "2.8.0", "device": "NVIDIA H200", "precision": "tf32"}
{"name": "Conv3x3Fwd", "ms": 3.0}
{"name": "Launch", "ms": 0.012}
{"name": "Params", "value": 35746307, "source": "pytorch/unet2d.py twin"}
{"name": "SampleDDIM", "precision": "tf32", "ms": 2000.0, "images_per_s": 64.0, "batch": 128, "steps": 50}
{"name": "SampleDDIM", "precision": "bf16", "ms": 1000.0, "images_per_s": 128.0, "batch": 128, "steps": 50}
{"name": "TrainStep", "precision": "tf32", "ms": 150.0, "batch": 128}
LOGEOF
	table "$py" "$d" >/dev/null
	local ok=1 want
	for want in "NVIDIA H200" "torch 2.8.0+cu128 (CUDA 12.8)" "5 passed, 2 failed" "bf16 0.37, fp32 0.21" \
		"1 fastest, 2 first deterministic" "CUDA graphs (TestGraphOps) *pass" "diffusers fixture forward + train step *pass" \
		"tiny UNet fp32 forward + train step *skip (no GPU or emulator: nope)" "forward fixture bf16 *rel L2 0.00678 (bound 0.078)" \
		"train step fixture fp32 *loss 1.100024 vs 1.100024, gradients rel L2 9.29e-07" "forward cifar10 fp32 *rel L2 3.1e-07" \
		"trainer fp16 with loss scaling *pass" "Conv3x3Fwd/cudnn .* 2.000 .* 3.000 .* 1.50x" "Conv3x3Fwd/im2col-autotune .* 3.000 .* 3.000 .* 1.00x" \
		"Launch/eager .* 0.0060 .* 0.0120 .* 2.00x" "Launch/graph100 .* 0.0015 .* 0.0120 .* 8.00x" \
		"sampling 50 DDIM steps, tf32 .* 128.0 img/s .* 64.0 img/s .* 2.00x" "sampling 50 DDIM steps, bf16 .* - .* 128.0 img/s" \
		"train step, tf32 (PyTorch/Go) .* 100.0 ms .* 150.0 ms .* 1.50x" "Replayed:50" "gobf16: 12 s of the budget left" \
		"Go bf16: 12 s of the budget left"; do
		grep -q -- "$want" "$d/table.txt" || {
			echo "gpu-check: table self-test: no line matches '$want'"
			ok=0
		}
	done
	if [ $ok = 1 ]; then
		echo "gpu-check: table self-test passed"
	else
		cat "$d/table.txt"
		return 1
	fi
}

remote_command() {
	echo
	echo "gpu-check: give the device tool exactly this one call (budget $BUDGET s inside a ${BUDGET}+30 s limit):"
	echo "  run(command=\"bash bench/gpu-check.sh --gpu\", carry=[\"bin/gpu\"], timeout_s=$((BUDGET + 30)))"
}

case "${1:-}" in
--build) build ;;
--remote) build && plan && remote_command ;;
--gpu) run_steps ;;
--dry-run)
	build && plan && run_steps dry && selftest "$(pick_python)" && remote_command
	;;
--self-test) selftest "$(pick_python)" ;;
*)
	sed -n '2,35p' "$0"
	exit 2
	;;
esac
