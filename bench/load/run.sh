#!/usr/bin/env bash
# Load test of "ddpm serve" on loopback: dynamic batching vs batch size 1 at
# 1, 8 and 32 concurrent clients, plus one direct batched call. Prints a
# Markdown table; extra arguments go to the Go driver, e.g.
#   bench/load/run.sh -fake                      # the TEST-ONLY fake generator
#   bench/load/run.sh -model /path/to/model -steps 10
#   bench/load/run.sh -cluster -fake              # Redis: 1 vs 2 workers, per-job Redis latency
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(mktemp -d)/ddpm
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./cmd/ddpm
nice go run ./bench/load -bin "$bin" "$@"
