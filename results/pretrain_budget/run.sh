#!/usr/bin/env bash
# The 10-minute default run of its day: `maelab pretrain --model mae_vit_fashion` (patch 4) with a 10-minute
# --time-budget, then the solved linear probe on the cls token and on the mean patch token of the last 4 blocks, and
# kNN (k=20) on the cls token. (Today's default preset is mae_vit_fashion_patch7: results/recipe_search.)
#
#   bash results/pretrain_budget/run.sh
#
# Environment: RUNS (default runs; the run directories and logs go to RUNS/pretrain_budget), MAELAB (default
# maelab), PYTHON (default python). Writes results.csv and load.txt here. Paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/pretrain_budget
out=${RUNS:-runs}/pretrain_budget
maelab=${MAELAB:-maelab}
mkdir -p "$out"
uptime > $here/load.txt
"$maelab" pretrain --model mae_vit_fashion --time-budget 10m --output-dir "$out/run" > "$out/pretrain.log" 2>&1
uptime >> $here/load.txt
"$maelab" linprobe --checkpoint "$out/run" --pool token --layers 1 --output-dir "$out/linprobe" > "$out/linprobe.log" 2>&1
"$maelab" linprobe --checkpoint "$out/run" --pool avg --layers 4 --output-dir "$out/linprobe-avg-l4" \
    > "$out/linprobe-avg-l4.log" 2>&1
"$maelab" knn --checkpoint "$out/run" --pool token --layers 1 --output-dir "$out/knn" > "$out/knn.log" 2>&1
uptime >> $here/load.txt
"${PYTHON:-python}" results/collect.py runs "$out"/{run,linprobe,linprobe-avg-l4,knn} --output $here/results.csv
