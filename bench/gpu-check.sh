#!/usr/bin/env bash
# gpu-check.sh: the one-shot GPU check of issue 6 (CUDA backend).
#
#   bash bench/gpu-check.sh --build     # here (no GPU, Go 1.26): static binaries into bin/gpu/
#   bash bench/gpu-check.sh --remote    # on the GPU machine (no Go): checks, timings, table
#   bash bench/gpu-check.sh --dry-run   # here: --build then --remote; every GPU step reports skip
#
# The GPU machine gets the repository (tracked files) plus bin/gpu/ (ignored
# by .gitignore's /bin/, so the device tool must carry it):
#   run(command="bash bench/gpu-check.sh --remote", carry=["bin/gpu"], timeout_s=540)
# Logs go to $OUT/gpu-check/ (or bin/gpu/out/ without $OUT). The remote part
# takes under 8 minutes: every step has its own timeout.
#
# Steps (remote):
#   1. device info (nvidia-smi, the cuBLAS that will be loaded, torch version)
#   2. per-op correctness: cuda.test TestOpsFP32 (rel err < 1e-5), TestOpsTF32
#      (< 3e-3 for the GEMM ops), TestConvChunks - every op against kernels.CPU
#      on seeded random inputs with NaN guard bands
#   3. Go op timings at the DDPM CIFAR-10 UNet's hot shapes, batch 128
#   4. the same ops in PyTorch eager (bench/torch_gpu.py --ops)
#   5. PyTorch whole-model sampling (batch 128, 50 DDIM steps) and train step
#      (batch 128) on bench/configs/ddpm-cifar10.json via bench/unet_torch.py
#   6. the Go whole model, when `ddpm bench` accepts --device (the executor)
#   7. the table
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=bin/gpu

build() {
	set -e
	rm -rf "$BIN"
	mkdir -p "$BIN"
	echo "gpu-check: building cgo-free binaries into $BIN (CGO_ENABLED=0, stripped)"
	CGO_ENABLED=0 go test -c -ldflags='-s -w' -o "$BIN/cuda.test" ./cuda
	CGO_ENABLED=0 go test -c -ldflags='-s -w' -o "$BIN/dev.test" ./cuda/dev
	CGO_ENABLED=0 go test -c -ldflags='-s -w' -o "$BIN/gexec.test" ./gexec
	if CGO_ENABLED=0 go build -ldflags='-s -w' -o "$BIN/ddpm" ./cmd/ddpm 2>"$BIN/ddpm-build.log"; then
		echo "gpu-check: built $BIN/ddpm"
	else
		echo "gpu-check: cmd/ddpm does not build now (see $BIN/ddpm-build.log); the whole-model Go step will be skipped"
		rm -f "$BIN/ddpm"
	fi
	git rev-parse HEAD >"$BIN/REVISION" 2>/dev/null || true
	# The diffusers fixture, so the lab UNet is checked against diffusers on the GPU too.
	if [ -d ../shared/fixtures/diffusers-unet-small ]; then
		cp -r ../shared/fixtures/diffusers-unet-small "$BIN/fixture"
	fi
	# The device tool carries at most 64 MiB: the ddpm binary goes first.
	if [ "$(du -sm "$BIN" | cut -f1)" -gt 60 ]; then
		echo "gpu-check: $BIN over 60 MiB: leaving out the ddpm binary"
		rm -f "$BIN/ddpm"
	fi
	ls -la "$BIN"
	du -sh "$BIN"
	set +e
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

# cublas_dirs prints directories holding libcublas.so.* or libcudnn.so.* (pip wheels included).
cublas_dirs() {
	local py=$1
	{
		for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
			ls "$d"/libcublas.so.* "$d"/libcudnn.so.* >/dev/null 2>&1 && echo "$d"
		done
		site=$("$py" -c 'import site,sys; print("\n".join(site.getsitepackages()))' 2>/dev/null)
		for s in $site; do
			[ -d "$s/nvidia" ] && find "$s/nvidia" -maxdepth 3 \( -name 'libcublas.so.*' -o -name 'libcudnn.so.*' \) -printf '%h\n' 2>/dev/null
		done
	} | awk '!seen[$0]++'
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
ops = read("ops.log")
passed = len(re.findall(r"--- PASS: Test\w+/", ops))
failed = len(re.findall(r"--- FAIL: Test\w+/", ops))
skipped = "no GPU here" in ops
worst = {}
for test, body in re.findall(r"=== RUN   (TestOpsFP32|TestOpsTF32|TestConvChunks|TestConvIm2col|TestConvAutotune|TestGroupNormKernel1)\n(.*?)(?==== RUN   Test\w+\n|\Z)", ops, re.S):
    for e in re.findall(r"relerr (\S+)", body):
        worst[test] = max(worst.get(test, 0.0), float(e))
go, lab = {}, []
for name, rest in re.findall(r"BenchmarkLab([\w/.-]+?)(?:-\d+)?\s+\d+\s+(.*)", read("go_bench.log")):
    m = re.search(r"([\d.]+) ms/call", rest)
    if m:
        lab.append((name, float(m.group(1))))
gx, lb = read("gexec.log"), read("lab.log")
def verdict(log, test):
    if "--- FAIL" in log:
        return "FAIL"
    if "--- SKIP" in log or "no GPU" in log:
        return "skip"
    return "pass" if ("--- PASS: " + test) in log else "?"
for name, rest in re.findall(r"BenchmarkGPU(\w+?)(?:-\d+)?\s+\d+\s+(.*)", read("go_bench.log")):
    m = re.search(r"([\d.]+) ms/call", rest)
    if m:
        go[name] = float(m.group(1))
torch, tinfo = {}, {}
for line in (read("torch_ops.jsonl") + read("torch_model.jsonl")).splitlines():
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if j.get("name") == "torch":
        tinfo = j
    elif "ms" in j:
        torch[j["name"]] = j
dev = read("info.txt").splitlines()
gpu = [l[5:] for l in dev if l.startswith("gpu: ")]
print("GPU check: %s" % (gpu[0] if gpu else "?"))
print("torch: %s" % (tinfo.get("version") or tinfo.get("skip", "?")))
if skipped:
    print("per-op correctness: SKIP (no GPU: see ops.log)")
else:
    print("per-op correctness: %d passed, %d failed; worst rel err %s" % (passed, failed,
          ", ".join("%s %.2g" % (k, v) for k, v in sorted(worst.items())) or "n/a"))
print("executor vs TapeMachine on the GPU: %s; kernel lab validation: %s" % (
    verdict(gx, "TestMatchesTapeMachineCUDA"), verdict(lb, "TestLab")))
print()
print("%-22s %12s %12s %14s" % ("op (batch 128)", "Go ms", "PyTorch ms", "Go speed-up"))
for name in ["Conv3x3Fwd", "Conv3x3Bwd", "GroupNormSiLUFwd", "GroupNormSiLUBwd", "AttentionFwd", "AttentionBwd", "Launch"]:
    g, t = go.get(name), torch.get(name, {}).get("ms")
    fmt = lambda v: "%12.3f" % v if v is not None else "%12s" % "skip"
    ratio = "%13.2fx" % (t / g) if g and t else "%14s" % "-"
    print("%-22s %s %s %s" % (name, fmt(g), fmt(t), ratio))
if lab:
    print()
    print("kernel lab (cuda/dev), batch 128:")
    for name, ms in lab:
        print("  %-34s %9.3f ms" % (name, ms))
s, tr = torch.get("SampleDDIM"), torch.get("TrainStep")
gm = read("go_model.log")
def variants(bench, unit):
    out = {}
    for v, val in re.findall(r"Benchmark%s(?:/(\w+))?(?:-\d+)?\s+\d+\s+.*?([\d.]+) %s" % (bench, unit), gm):
        out.setdefault(v or "fixed", float(val))
    return out
gsample, gfwd, gtrain = variants("LabUNetSampleDDIM50", "images/s"), variants("LabUNetForward", "ms/call"), variants("LabUNetTrainStep", "ms/call")
gerr = re.search(r"whole-UNet forward cifar10, GPU vs CPU: relative error (\S+)", gm)
gfix = re.search(r"GPU: relative L2 error (\S+) against diffusers", gm)
terr = re.search(r"train step cifar10, GPU vs CPU: worst gradient relative error (\S+), worst parameter difference (\S+)", gm)
print()
print("whole model, ddpm-cifar10, batch 128 (Go: cuda/dev lab UNet, TF32; PyTorch eager %s):" % tinfo.get("precision", "tf32"))
print("  Go forward, GPU vs CPU at batch 2:       %s" % ("rel err " + gerr.group(1) if gerr else ("FAIL" if "--- FAIL" in gm else "skip")))
print("  Go forward on the GPU vs diffusers fixture: %s" % ("rel L2 " + gfix.group(1) if gfix else ("FAIL" if "--- FAIL: TestUNetFixture" in gm else "skip")))
ps = s["images_per_s"] if s else None
for v in sorted(gsample) or ["fixed"]:
    gs = gsample.get(v)
    print("  sampling, 50 DDIM steps, images/s:       Go[%s] %s   PyTorch %s   Go/PyTorch %s" % (v,
        "%.1f" % gs if gs else "skip", "%.1f" % ps if ps else "skip", "%.2fx" % (gs / ps) if gs and ps else "-"))
print("  forward ms (Go):                         %s" % (", ".join("%s %.2f" % kv for kv in sorted(gfwd.items())) or "skip"))
print("  Go train step, GPU vs CPU at batch 2:    %s" % ("grad rel err %s, param diff %s" % terr.groups() if terr else ("FAIL" if "--- FAIL: TestTrain" in gm else "skip")))
pt = tr["ms"] if tr else None
for v in sorted(gtrain) or ["fixed"]:
    gt = gtrain.get(v)
    print("  train step ms (fwd+bwd+AdamW):           Go[%s] %s   PyTorch %s   PyTorch/Go %s" % (v,
        "%.1f" % gt if gt else "skip", "%.1f" % pt if pt else "skip", "%.2fx" % (pt / gt) if gt and pt else "-"))
PYEOF
}

# selftest_table feeds the table fabricated logs in the exact formats of
# go test -v, go test -bench and torch_gpu.py, and checks the numbers land.
selftest_table() {
	local d=$BIN/selftest/gpu-check
	mkdir -p "$d"
	printf 'revision: x\ngpu: NVIDIA H100 80GB HBM3, 580.00, 81559 MiB\n' >"$d/info.txt"
	cat >"$d/ops.log" <<'LOGEOF'
=== RUN   TestOpsFP32
=== RUN   TestOpsFP32/Conv2D/3x3
    ops_test.go:262: op Conv2D/3x3                       relerr 2.5e-07 tol 1e-05
--- PASS: TestOpsFP32 (0.10s)
    --- PASS: TestOpsFP32/Conv2D/3x3 (0.01s)
=== RUN   TestOpsTF32
=== RUN   TestOpsTF32/Conv2D/3x3
    ops_test.go:262: op Conv2D/3x3                       relerr 0.0011 tol 0.003
    ops_test.go:250: output 0: relative error 0.0042 > 0.003
--- FAIL: TestOpsTF32 (0.10s)
    --- FAIL: TestOpsTF32/Conv2D/3x3 (0.01s)
LOGEOF
	cat >"$d/go_bench.log" <<'LOGEOF'
BenchmarkGPUConv3x3Fwd-16    	      20	   2000000 ns/op	         2.000 ms/call	     75000 GFLOP/s
BenchmarkGPULaunch-16        	      20	      5000 ns/op	         0.005000 ms/call
LOGEOF
	printf '{"name": "torch", "version": "2.11.0"}\n{"name": "Conv3x3Fwd", "ms": 3.0}\n' >"$d/torch_ops.jsonl"
	printf '{"name": "SampleDDIM", "ms": 1000.0, "images_per_s": 128.0}\n{"name": "TrainStep", "ms": 250.0}\n' >"$d/torch_model.jsonl"
	cat >"$d/go_model.log" <<'LOGEOF'
    unet_test.go:73: whole-UNet forward cifar10, GPU vs CPU: relative error 3.1e-07 (tolerance 1e-04)
BenchmarkLabUNetForward/fixed-16          	       1	  40000000 ns/op	        40.00 ms/call
BenchmarkLabUNetForward/autotune-16       	       1	  30000000 ns/op	        30.00 ms/call
BenchmarkLabUNetSampleDDIM50/fixed-16     	       1	2000000000 ns/op	      2000 ms/call	        64.00 images/s
BenchmarkLabUNetSampleDDIM50/autotune-16  	       1	1000000000 ns/op	      1000 ms/call	       128.0 images/s
BenchmarkLabUNetTrainStep/fixed-16        	       1	 500000000 ns/op	       500.0 ms/call
    unet_train_test.go:147: train step cifar10, GPU vs CPU: worst gradient relative error 2e-06, worst parameter difference 9e-05
LOGEOF
	table "$1" "$d" >/dev/null
	local ok=1
	for want in "H100" "1 passed, 1 failed" "TestOpsTF32 0.0011" "Conv3x3Fwd .* 2.000 .* 3.000 .* 1.50x" \
		"Launch .* 0.005 .*skip" "Go.fixed. 64.0   PyTorch 128.0   Go/PyTorch 0.50x" "Go.autotune. 128.0   PyTorch 128.0   Go/PyTorch 1.00x" "rel err 3.1e-07" "fixed 40.00" "Go.fixed. 500.0   PyTorch 250.0   PyTorch/Go 0.50x" "grad rel err 2e-06, param diff 9e-05"; do
		grep -q -- "$want" "$d/table.txt" || { echo "gpu-check: table self-test: no line matches '$want'"; ok=0; }
	done
	[ $ok = 1 ] && echo "gpu-check: table self-test passed" || { cat "$d/table.txt"; return 1; }
}

# left N prints min(N, seconds left of the 470 s budget of the remote part).
left() {
	local l=$((470 - (SECONDS - T0)))
	[ "$l" -lt "$1" ] && echo "$l" || echo "$1"
}

remote() {
	T0=$SECONDS
	local out=${OUT:-$BIN/out}/gpu-check
	mkdir -p "$out"
	if [ ! -x "$BIN/cuda.test" ]; then
		echo "gpu-check: $BIN/cuda.test missing: run 'bash bench/gpu-check.sh --build' here and carry bin/gpu" | tee "$out/summary.txt"
		return 1
	fi
	local PY
	PY=$(pick_python)
	echo "== 1. device" | tee "$out/info.txt"
	{
		echo "revision: $(cat "$BIN/REVISION" 2>/dev/null)"
		if command -v nvidia-smi >/dev/null; then
			echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
		else
			echo "gpu: none (no nvidia-smi)"
		fi
		"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1
	} | tee -a "$out/info.txt"
	local dirs
	dirs=$(cublas_dirs "$PY" | paste -sd: -)
	if [ -n "$dirs" ]; then
		export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
		echo "cuBLAS/cuDNN dirs: $dirs" | tee -a "$out/info.txt"
	fi

	if [ -x "$BIN/ddpm" ]; then
		echo "== 1b. ddpm devices --device cuda --check"
		timeout 60 "$BIN/ddpm" devices --device cuda --check 2>&1 | tee "$out/devices.txt"
	fi

	echo "== 2. per-op correctness (timeout 170 s)"
	timeout 170 "$BIN/cuda.test" -test.v -test.count 1 -test.run 'TestOpsFP32|TestOpsTF32|TestConvChunks|TestConvIm2col|TestConvAutotune|TestGroupNormKernel1|TestNoGPUError|TestPTXKernels' \
		>"$out/ops.log" 2>&1
	echo "exit $?" >>"$out/ops.log"
	grep -E '^(--- |ok|FAIL|PASS|exit)|^    --- FAIL|no GPU|relative error|guard band|modified|gpu:|convolution engine' "$out/ops.log" | tail -40

	echo "== 2b. executor vs TapeMachine on the GPU, kernel lab validation (timeout 60 s)"
	timeout 30 "$BIN/gexec.test" -test.v -test.count 1 -test.run 'TestMatchesTapeMachineCUDA' >"$out/gexec.log" 2>&1
	echo "exit $?" >>"$out/gexec.log"
	(cd cuda/dev && timeout 30 "../../$BIN/dev.test" -test.v -test.count 1 -test.run 'TestLab') >"$out/lab.log" 2>&1
	echo "exit $?" >>"$out/lab.log"
	grep -hE '^(--- |    --- |ok|FAIL|exit)|relative error|no GPU' "$out/gexec.log" "$out/lab.log" | tail -20

	echo "== 3. Go op timings and kernel lab (timeout 150 s)"
	timeout 100 "$BIN/cuda.test" -test.run '^$' -test.bench 'GPU' -test.benchtime 20x >"$out/go_bench.log" 2>&1
	echo "exit $?" >>"$out/go_bench.log"
	(cd cuda/dev && timeout 50 "../../$BIN/dev.test" -test.run '^$' -test.bench 'Lab' -test.benchtime 10x) >>"$out/go_bench.log" 2>&1
	echo "exit $?" >>"$out/go_bench.log"
	grep -E 'Benchmark|SKIP|no GPU|FAIL|exit' "$out/go_bench.log" | head -40

	echo "== 4. PyTorch op timings (timeout 90 s, $PY)"
	timeout 90 "$PY" bench/torch_gpu.py --ops >"$out/torch_ops.jsonl" 2>"$out/torch_ops.err"
	echo "exit $?" >>"$out/torch_ops.err"
	cat "$out/torch_ops.jsonl"

	echo "== 5. PyTorch whole model, ddpm-cifar10, batch 128 (timeout $(left 150) s)"
	local cfg=ddpm-cifar10
	[ -f bench/configs/ddpm-cifar10.json ] && cfg=bench/configs/ddpm-cifar10.json
	timeout "$(left 150)" "$PY" bench/torch_gpu.py --model "$cfg" --batch 128 --steps 50 \
		>"$out/torch_model.jsonl" 2>"$out/torch_model.err"
	echo "exit $?" >>"$out/torch_model.err"
	cat "$out/torch_model.jsonl"

	echo "== 6. Go whole model (cuda/dev lab UNet: GPU vs CPU at batch 2, then timings; timeout $(left 150) s)"
	[ -d "$BIN/fixture" ] && export DDPM_UNET_FIXTURE="$PWD/$BIN/fixture"
	(cd cuda/dev && timeout "$(left 60)" "../../$BIN/dev.test" -test.v -test.count 1 -test.run 'TestUNet|TestTrain') >"$out/go_model.log" 2>&1
	echo "exit $?" >>"$out/go_model.log"
	(cd cuda/dev && timeout "$(left 90)" "../../$BIN/dev.test" -test.run '^$' -test.bench 'LabUNet' -test.benchtime 1x) >>"$out/go_model.log" 2>&1
	echo "exit $?" >>"$out/go_model.log"
	grep -E '^(--- |ok|FAIL|exit)|relative|Benchmark' "$out/go_model.log" | head -20
	if [ -x "$BIN/ddpm" ] && "$BIN/ddpm" bench --help 2>&1 | grep -q -- '-device'; then
		echo "(ddpm bench has --device: running it too)"
		timeout "$(left 60)" "$BIN/ddpm" bench --device cuda >"$out/ddpm_bench.log" 2>&1
		echo "exit $?" >>"$out/ddpm_bench.log"
		tail -10 "$out/ddpm_bench.log"
	fi

	echo "== 7. table ($((SECONDS - T0)) s so far)"
	table "$PY" "$out"
	echo "gpu-check: remote part took $((SECONDS - T0)) s; logs in $out"
}

case "${1:-}" in
--build) build ;;
--remote) remote ;;
--dry-run)
	build && OUT=${OUT:-$BIN/dry} remote && selftest_table "$(pick_python)" &&
		echo "gpu-check: PyTorch whole-model path on the CPU (smoke, batch 2):" &&
		"$(pick_python)" bench/torch_gpu.py --cpu-smoke
	;;
*)
	sed -n '2,30p' "$0"
	exit 2
	;;
esac
