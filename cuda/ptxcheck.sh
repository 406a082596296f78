#!/usr/bin/env bash
# ptxcheck.sh [PTXAS]: assemble the embedded PTX (cuda/kernels/ops.ptx,
# clang-16's output) with NVIDIA's ptxas for sm_80 (A100) and sm_90
# (H100/H200), as the driver's JIT will, and fail on any error or warning
# (spills and local memory use are warnings here, and warnings are
# errors); then print the registers, spills, stack and shared memory of
# every kernel.
#
# No GPU and no CUDA install are needed: ptxas is a static program (only
# libc). CI takes it from Debian's non-free nvidia-cuda-toolkit 11.8 without
# installing the package:
#
#   apt-get download nvidia-cuda-toolkit && dpkg -x nvidia-cuda-toolkit_*.deb DIR
#   bash cuda/ptxcheck.sh DIR/usr/bin/ptxas
#
# ptxas 11.8 reads PTX ISA up to 7.8; clang-16 writes ".version 7.0" for
# sm_80, and ptxas compiles sm_80 PTX for sm_90 as the driver does.
# PTXAS defaults to $PTXAS, then ptxas on PATH.
set -euo pipefail
cd "$(dirname "$0")"
PTXAS=${1:-${PTXAS:-ptxas}}
if ! command -v "$PTXAS" >/dev/null 2>&1; then
	echo "ptxcheck: no ptxas ($PTXAS); see the comment at the top of $0" >&2
	exit 2
fi
"$PTXAS" --version | tail -1
PTX=${PTX:-kernels/ops.ptx}
ver=$(awk '$1 == ".version" {print $2; exit}' "$PTX")
target=$(awk '$1 == ".target" {print $2; exit}' "$PTX")
echo "$PTX: PTX ISA $ver, .target $target"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for arch in sm_80 sm_90; do
	log=$tmp/$arch.log
	if ! "$PTXAS" -arch="$arch" -O3 -v --warn-on-spills --warn-on-local-memory-usage --warning-as-error \
		"$PTX" -o "$tmp/$arch.cubin" >"$log" 2>&1; then
		echo "ptxcheck: ptxas -arch=$arch failed:"
		grep -viE '^ptxas info|bytes stack frame' "$log" || cat "$log"
		status=1
		continue
	fi
	if grep -qiE 'warning|error' "$log"; then
		echo "ptxcheck: ptxas -arch=$arch warned:"
		grep -iE 'warning|error' "$log"
		status=1
	fi
	# ptxas -v prints, per kernel: "Compiling entry function 'K' for
	# 'sm_XX'", "N bytes stack frame, N bytes spill stores, N bytes spill
	# loads" and "Used N registers, ... N bytes smem, ...".
	echo "== $arch ($(wc -c <"$tmp/$arch.cubin") bytes of SASS)"
	awk -v arch="$arch" '
		/Compiling entry function/ { split($0, q, "\047"); n++; name[n] = q[2] }
		/bytes stack frame/ { stack[n] = $1; st[n] = $5; ld[n] = $9 }
		/Used [0-9]+ registers/ {
			for (i = 1; i <= NF; i++) if ($i == "registers,") regs[n] = $(i - 1)
			sm = 0
			if (match($0, /[0-9]+ bytes smem/)) { sm = substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", sm) }
			smem[n] = sm
		}
		END {
			printf "%-28s %9s %7s %12s %11s %9s\n", "kernel", "registers", "stack", "spill stores", "spill loads", "smem"
			maxr = 0; spills = 0
			for (i = 1; i <= n; i++) {
				printf "%-28s %9d %7d %12d %11d %9d\n", name[i], regs[i], stack[i], st[i], ld[i], smem[i]
				if (regs[i] > maxr) { maxr = regs[i]; maxk = name[i] }
				spills += st[i] + ld[i]
			}
			printf "%s: %d kernels, most registers %d (%s), spilled bytes %d\n", arch, n, maxr, maxk, spills
		}' "$log"
done
if [ $status = 0 ]; then
	echo "ptxcheck: ok (sm_80, sm_90: no errors, no warnings)"
fi
exit $status
