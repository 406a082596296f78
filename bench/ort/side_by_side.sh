#!/usr/bin/env bash
# side_by_side.sh: ddpm's CPU forward (fp32, and bf16 where the CPU has
# it) against ONNX Runtime and PyTorch on the same UNet, in one run,
# alternating the engines round by round, printing a markdown table of the
# median forward time over ROUNDS rounds (each round's figure is itself
# the median of --iters passes) and the ratios, and a row of the best
# round of each engine (on a shared host, the least disturbed one).
#
#   bash bench/ort/side_by_side.sh [ROUNDS]
#
# Configs: the diffusers fixture's small UNet at batch 16 and the DDPM
# CIFAR-10 UNet at batch 4. ONNX Runtime: npm's onnxruntime-node 1.20.1
# (CPU provider, 2 intra-op threads, all graph optimisations), installed
# into $ORT_DIR (default ~/.cache/ddpm-ort) with --ignore-scripts; the
# model is pytorch/unet2d.py's twin exported by export.py (opset 17).
# PyTorch: bench/unet_cpu.py (Debian's python3-torch, 2 threads).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
py=/usr/bin/python3
ort_dir=${ORT_DIR:-$HOME/.cache/ddpm-ort}
if [ ! -d "$ort_dir/node_modules/onnxruntime-node" ]; then
	mkdir -p "$ort_dir"
	npm install --silent --prefix "$ort_dir" --ignore-scripts onnxruntime-node@1.20.1 >&2
fi
export NODE_PATH=$ort_dir/node_modules
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/ddpm" ./cmd/ddpm
small=../shared/fixtures/diffusers-unet-small
bf16=yes
"$tmp/ddpm" bench --preset mnist --device cpu --precision bf16 --batch 1 --iters 1 --warmup 0 >/dev/null 2>&1 || bf16=no
ms() { $py -c "import json,sys; print(json.loads(sys.stdin.readline())['forward_ms_median'])"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
best() { sort -g | head -1; }
echo "| config | batch | ddpm fp32 ms | ddpm bf16 ms | ONNX Runtime ms | PyTorch ms | fp32 vs ORT | fp32 vs PyTorch | bf16 vs fp32 |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for spec in "small:16" "ddpm-cifar10:4"; do
	name=${spec%%:*} batch=${spec##*:}
	if [ "$name" = small ]; then
		gargs=(--model "$small") cfg="$small/config.json"
	else
		gargs=(--preset ddpm-cifar10) cfg=ddpm-cifar10
	fi
	read -r ch size < <($py -c "
import json,sys
c={'in_channels':3,'sample_size':32} if sys.argv[1]=='ddpm-cifar10' else json.load(open(sys.argv[1]))
print(c.get('in_channels',3), c.get('sample_size',32))" "$cfg")
	$py bench/ort/export.py --config "$cfg" --batch "$batch" --out "$tmp/$name.onnx" >/dev/null 2>&1
	f=() b=() o=() p=()
	for _ in $(seq "$rounds"); do
		f+=("$("$tmp/ddpm" bench "${gargs[@]}" --device cpu --batch "$batch" --iters 6 --json 2>/dev/null | tail -1 | ms)")
		if [ $bf16 = yes ]; then
			b+=("$("$tmp/ddpm" bench "${gargs[@]}" --device cpu --precision bf16 --batch "$batch" --iters 6 --json 2>/dev/null | tail -1 | ms)")
		fi
		o+=("$(node bench/ort/bench.js "$tmp/$name.onnx" --batch "$batch" --channels "$ch" --size "$size" --iters 6 | ms)")
		p+=("$($py bench/unet_cpu.py --config "$cfg" --batch "$batch" --iters 6 | ms)")
	done
	for stat in median best; do
		pick=median label=""
		[ $stat = best ] && pick=best label=", best round"
		F=$(printf '%s\n' "${f[@]}" | $pick) O=$(printf '%s\n' "${o[@]}" | $pick) P=$(printf '%s\n' "${p[@]}" | $pick)
		B=nan
		[ $bf16 = yes ] && B=$(printf '%s\n' "${b[@]}" | $pick)
		$py -c "
F,B,O,P=$F,float('$B'),$O,$P
bs = '%.1f' % B if B == B else 'n/a'
rb = '%.2fx' % (F/B) if B == B else 'n/a'
print('| $name$label | $batch | %.1f | %s | %.1f | %.1f | %.2fx | %.2fx | %s |' % (F, bs, O, P, O/F, P/F, rb))"
	done
done
echo
echo "Ratios are speed-ups of ddpm (time of the peer / time of ddpm; bf16 vs fp32: fp32 time / bf16 time); $rounds rounds, $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores."
