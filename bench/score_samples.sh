#!/usr/bin/env bash
# score_samples.sh: how often the Go MNIST classifier (quality/mnistclf,
# 99.15% on the MNIST test set) reads ddpm's class-conditional samples as
# the class they were asked for (issue 4's acceptance: >= 90% overall).
#
#   bash bench/score_samples.sh [MODEL] [N_PER_CLASS] [STEPS] [GUIDANCE]
#
# MODEL defaults to the embedded default model; samples go to a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-} n=${2:-100} steps=${3:-50} guidance=${4:-0}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go build -o "$out/ddpm" ./cmd/ddpm
for k in 0 1 2 3 4 5 6 7 8 9; do
	"$out/ddpm" sample ${model:+--model "$model"} --class "$k" --n "$n" --steps "$steps" \
		--guidance "$guidance" --seed "$k" --out-dir "$out/$k" 2>/dev/null >/dev/null
done
go run ./quality/mnistclf/cmd/mnistscore "$out"
