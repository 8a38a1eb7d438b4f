#!/usr/bin/env bash
# The benchmark rerun after the switch to the fused AdamW (commit 0c551ad), then ViT-B three more times;
# uptime lines in run.log and run-vit-base-repeats.log.
set -euo pipefail
export PYTHONPATH=${PYTHONPATH:-$PWD/src}
(uptime; bash "$(dirname "$0")/../run_cpu.sh" results/bench/fused; uptime) > results/bench/fused/run.log 2>&1
for i in 2 3 4; do
  (uptime; python -m maelab bench --models base --batch-sizes 8 --variants mae mask_tokens decoder1 --steps 3 \
    --warmup 1 --output "results/bench/fused/cpu-vit-base-repeat$i"; uptime) >> results/bench/fused/run-vit-base-repeats.log 2>&1
done
