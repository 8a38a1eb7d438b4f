#!/usr/bin/env bash
# Baselines every encoder is compared with: raw pixels and random-init encoders, under the solved probe
# (`maelab linprobe`, L-BFGS, C chosen on the 6,000-image validation split) and kNN (k=20), on Fashion-MNIST.
#
#   bash results/baselines/run.sh
#
# Environment: RUNS (default runs; the run directories and logs go to RUNS/baselines), MAELAB (default maelab),
# PYTHON (default python). Writes results/baselines/results.csv from the run directories at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/baselines
out=${RUNS:-runs}/baselines
maelab=${MAELAB:-maelab}
mkdir -p "$out"
run() {  # run NAME COMMAND OPTIONS...
    local name=$1
    shift
    "$maelab" "$@" --output-dir "$out/$name" > "$out/$name.log" 2>&1
}
run linprobe-pixels linprobe --init pixels
run knn-pixels knn --init pixels
run linprobe-random linprobe --init none --model mae_vit_fashion
run knn-random knn --init none --model mae_vit_fashion
# The control for the default preset (same architecture and features, random weights):
run linprobe-random-patch7-avg-l4 linprobe --init none --model mae_vit_fashion_patch7 --pool avg --layers 4
run knn-random-patch7-avg-l4 knn --init none --model mae_vit_fashion_patch7 --pool avg --layers 4
run linprobe-random-patch7-avg-l6 linprobe --init none --model mae_vit_fashion_patch7 --pool avg --layers 6
"${PYTHON:-python}" results/collect.py runs "$out"/{linprobe-pixels,knn-pixels,linprobe-random,knn-random} \
    "$out"/{linprobe-random-patch7-avg-l4,knn-random-patch7-avg-l4,linprobe-random-patch7-avg-l6} \
    --output "$here/results.csv"
