#!/usr/bin/env bash
# A first fine-tuning number for the default recipe (issue 16): 3 epochs of `maelab finetune` (its default recipe:
# the paper's layer decay, drop path, mixup/cutmix, RandAugment, label smoothing; checkpoint-best chosen on the
# 10% validation split) from the default pre-training run (seed 1 of results/recipe_search/final), and the same
# from random init. Run from the repository root; CKPT is that run's pretrain directory.
set -euo pipefail
out=${OUT:-results/finetune_default}
maelab finetune --checkpoint "$CKPT" --epochs 3 --output-dir $out/mae > $out/mae.log 2>&1
maelab finetune --init none --model mae_vit_fashion_patch7 --epochs 3 --output-dir $out/scratch > $out/scratch.log 2>&1
