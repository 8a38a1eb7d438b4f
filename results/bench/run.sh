#!/usr/bin/env bash
# The CPU benchmark: five `maelab bench` invocations, each measuring its own matmul peak in the same process.
# Step counts are small to keep the whole run to minutes on a 2-core machine; run it on an idle machine.
#
#   bash results/bench/run.sh [OUTPUT_DIR]     # default results/bench/quiet (the committed tables)
#
# Environment: MAELAB (default maelab). Writes cpu-*.md / cpu-*.json (the tables) and machine.txt (uptime before
# and after) to OUTPUT_DIR. The GPU benchmark is gpu/run_gpu.sh; block-mask sampling's cost is block_mask/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/bench/quiet}
maelab=${MAELAB:-maelab}
mkdir -p "$out"
start=$(uptime)
"$maelab" bench --models fashion --batch-sizes 64 \
  --variants mae mask_tokens decoder1 decoder8 compile bf16 grad_ckpt --steps 5 --warmup 2 \
  --output "$out/cpu-fashion"
"$maelab" bench --models tiny --batch-sizes 64 --variants mae mask_tokens decoder1 \
  --steps 2 --warmup 1 --output "$out/cpu-vit-tiny"
"$maelab" bench --models base --batch-sizes 8 --variants mae mask_tokens decoder1 \
  --steps 2 --warmup 1 --output "$out/cpu-vit-base"
"$maelab" bench --models large --batch-sizes 2 --variants mae mask_tokens \
  --steps 2 --warmup 1 --output "$out/cpu-vit-large"
# The data path alone next to a fashion training step at batch 256.
"$maelab" bench --models fashion --batch-sizes 256 --variants mae --steps 3 --warmup 1 --loader \
  --dataset fashion_mnist --output "$out/cpu-fashion-loader"
{ echo "# uptime before and after the five invocations"; echo "$start"; uptime; } > "$out/machine.txt"
