#!/usr/bin/env bash
# results/finetune_60m/run.sh with the light recipe that won results/finetune_recipe/'s validation screen: no mixup,
# no cutmix, crops of 35-100% of the area, no RandAugment, no random erasing, blr 2e-3; 60 minutes per arm, from the
# 60-minute MAE encoder and from random init.
#
#   bash results/finetune_60m_light/run.sh
#
# Environment as results/finetune_60m/run.sh (RUNS, CKPT, BUDGET, MAELAB, PYTHON); the run directories go to
# RUNS/finetune_60m_light, the tables and curve.png here.
set -euo pipefail
cd "$(dirname "$0")/../.."
OPTIONS="--mixup 0 --cutmix 0 --crop-scale 0.35 --rand-augment= --reprob 0 --blr 2e-3" \
    OUT=${OUT:-${RUNS:-runs}/finetune_60m_light} RECORD=results/finetune_60m_light bash results/finetune_60m/run.sh
