#!/usr/bin/env bash
# The idle-machine benchmark rerun after the switch to the fused AdamW (commit 0c551ad); see uptime lines in run.log.
# Step counts are small to keep the whole run to minutes on a 2-core machine shared with other jobs.
set -euo pipefail
export PYTHONPATH=${PYTHONPATH:-$PWD/src}
python -m maelab bench --models fashion --batch-sizes 64 \
  --variants mae mask_tokens decoder1 decoder8 compile bf16 grad_ckpt --steps 5 --warmup 2 \
  --output results/bench/fused/cpu-fashion
python -m maelab bench --models tiny --batch-sizes 64 --variants mae mask_tokens decoder1 \
  --steps 2 --warmup 1 --output results/bench/fused/cpu-vit-tiny
python -m maelab bench --models base --batch-sizes 8 --variants mae mask_tokens decoder1 \
  --steps 2 --warmup 1 --output results/bench/fused/cpu-vit-base
python -m maelab bench --models large --batch-sizes 2 --variants mae mask_tokens \
  --steps 2 --warmup 1 --output results/bench/fused/cpu-vit-large
# The data path alone next to a fashion training step at batch 256 (run separately, after the above).
python -m maelab bench --models fashion --batch-sizes 256 --variants mae --steps 3 --warmup 1 --loader \
  --dataset fashion_mnist --output results/bench/fused/cpu-fashion-loader
# also: for i in 2 3 4: python -m maelab bench --models base --batch-sizes 8 --variants mae mask_tokens decoder1 --steps 3 --warmup 1 --output results/bench/fused/cpu-vit-base-repeat$i
