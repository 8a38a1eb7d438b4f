#!/usr/bin/env bash
# The fine-tuning rows of results/label_efficiency (called by its run.sh, with the same environment):
# the MAE encoder fine-tuned, the same ViT from scratch, and a timm ResNet-18 from scratch, on the same label
# draws with the same loop and one recipe fixed in advance for all three (no arm is tuned for any row):
# AdamW, blr 2e-3 (lr = blr x 64 / 256), weight decay 0.05, 10% warmup then cosine, batch 64, label smoothing 0.1,
# drop path 0.1, random resized crops of 35-100% and flips, no mixup, cutmix, RandAugment or erasing (the light
# recipe of results/finetune_recipe); layer decay 0.75 for the pre-trained encoder only (the paper's), 1 for the
# networks trained from scratch. Steps: 200 at K = 10, 400 at K = 100, 1500 at K = 1000. The checkpoint is chosen
# on the K-per-class validation draw; the test split is scored once with it.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-runs}
out=$runs/label_efficiency
maelab=${MAELAB:-maelab}
budgets=${BUDGETS:-10 100 1000}
seeds=${SEEDS:-0 1 2}
mae=$out/pretrain-10m-seed0
recipe=(--blr 2e-3 --weight-decay 0.05 --warmup-fraction 0.1 --batch-size 64 --smoothing 0.1 --drop-path 0.1
        --crop-scale 0.35 --mixup 0 --cutmix 0 --rand-augment "" --reprob 0 --no-tensorboard)

run() {  # run NAME OPTIONS...: skipped when NAME finished before
    local name=$1
    shift
    if [[ -f $out/$name/metrics.json ]]; then return; fi
    rm -rf "${out:?}/$name"
    "$maelab" finetune "$@" "${recipe[@]}" --output-dir "$out/$name" > "$out/$name.log" 2>&1
    tail -1 "$out/$name.log"
}

steps_for() {
    case $1 in 10) echo 200 ;; 100) echo 400 ;; 1000) echo 1500 ;; *) echo "no step count for K=$1" >&2; exit 2 ;; esac
}

for k in $budgets; do
    for s in $seeds; do
        cell=(--labels-per-class "$k" --label-seed "$s" --steps "$(steps_for "$k")")
        run "ft-mae10m-k$k-s$s" --checkpoint "$mae" --layer-decay 0.75 "${cell[@]}"
        run "ft-vit-scratch-k$k-s$s" --init none --model mae_vit_fashion_patch7 --layer-decay 1 "${cell[@]}"
        run "ft-resnet18-k$k-s$s" --init none --arch resnet18 "${cell[@]}"
    done
done
