#!/usr/bin/env bash
# The CPU benchmark committed here: five invocations, each measuring its own matmul peak in-process.
# Step counts are small to keep the whole run to minutes on a 2-core machine shared with other jobs.
# Usage (repository root): bash results/bench/run_cpu.sh [OUTPUT_DIR]   (default results/bench)
set -euo pipefail
export PYTHONPATH=${PYTHONPATH:-$PWD/src}
OUT=${1:-results/bench}
python -m maelab bench --models fashion --batch-sizes 64 \
  --variants mae mask_tokens decoder1 decoder8 compile bf16 grad_ckpt --steps 5 --warmup 2 \
  --output "$OUT/cpu-fashion"
python -m maelab bench --models tiny --batch-sizes 64 --variants mae mask_tokens decoder1 \
  --steps 2 --warmup 1 --output "$OUT/cpu-vit-tiny"
python -m maelab bench --models base --batch-sizes 8 --variants mae mask_tokens decoder1 \
  --steps 2 --warmup 1 --output "$OUT/cpu-vit-base"
python -m maelab bench --models large --batch-sizes 2 --variants mae mask_tokens \
  --steps 2 --warmup 1 --output "$OUT/cpu-vit-large"
# The data path alone next to a fashion training step at batch 256 (run separately, after the above).
python -m maelab bench --models fashion --batch-sizes 256 --variants mae --steps 3 --warmup 1 --loader \
  --dataset fashion_mnist --output "$OUT/cpu-fashion-loader"
