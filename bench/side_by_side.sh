#!/usr/bin/env bash
# side_by_side.sh: ddpm's Gorgonia UNet against the same UNet in PyTorch on
# this machine's CPU, in one run, alternating the two, printing a markdown
# table of images/s and the ratio ddpm/PyTorch.
#
#   bash bench/side_by_side.sh [ROUNDS]
#
# Configs: the diffusers fixture's small UNet at batch 16 and the DDPM
# CIFAR-10 UNet (ddpm-cifar10 preset) at batch 4, forward and training step
# (forward, MSE, backward, AdamW). Each figure is the best of ROUNDS
# (default 2) medians, since the machine is shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
go build -o /tmp/ddpm-bench ./cmd/ddpm
small=../shared/fixtures/diffusers-unet-small
py=/usr/bin/python3
best() { sort -g | tail -1; }
field() { $py -c "import json,sys; print(json.loads(sys.stdin.readline())['$1'])"; }
echo "| config | batch | ddpm fwd img/s | torch fwd img/s | fwd ratio | ddpm train img/s | torch train img/s | train ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for spec in "small:16" "ddpm-cifar10:4"; do
	name=${spec%%:*} batch=${spec##*:}
	if [ "$name" = small ]; then
		gargs=(--model "$small") pargs=(--config "$small/config.json")
	else
		gargs=(--preset ddpm-cifar10) pargs=(--config ddpm-cifar10)
	fi
	gf=() pf=() gt=() pt=()
	for _ in $(seq "$rounds"); do
		g=$(/tmp/ddpm-bench bench "${gargs[@]}" --batch "$batch" --iters 6 --train --json 2>/dev/null | tail -1)
		p=$($py bench/unet_cpu.py "${pargs[@]}" --batch "$batch" --iters 6 --train)
		gf+=("$(echo "$g" | field images_per_sec)") gt+=("$(echo "$g" | field train_images_per_sec)")
		pf+=("$(echo "$p" | field images_per_sec)") pt+=("$(echo "$p" | field train_images_per_sec)")
	done
	G=$(printf '%s\n' "${gf[@]}" | best) P=$(printf '%s\n' "${pf[@]}" | best)
	GT=$(printf '%s\n' "${gt[@]}" | best) PT=$(printf '%s\n' "${pt[@]}" | best)
	$py -c "print('| $name | $batch | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx |' % ($G, $P, $G/$P, $GT, $PT, $GT/$PT))"
done
