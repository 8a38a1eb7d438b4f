#!/usr/bin/env bash
# Raw-pixel and random-encoder baselines on scikit-learn's handwritten digits (--dataset digits: 1,297 training
# images, 130 of them the validation split, and 500 test images), the protocol of results/baselines: solved probe
# (C chosen on validation) and kNN (k=20). Pixels at the native 8x8.
#
#   bash results/digits/run.sh
#
# Environment: RUNS (default runs; run directories and logs go to RUNS/digits), MAELAB (default maelab),
# PYTHON (default python). Writes results/digits/results.csv at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/digits
out=${RUNS:-runs}/digits
maelab=${MAELAB:-maelab}
mkdir -p "$out"
run() {  # run NAME COMMAND OPTIONS...
    local name=$1
    shift
    "$maelab" "$@" --dataset digits --output-dir "$out/$name" > "$out/$name.log" 2>&1
}
run linprobe-pixels linprobe --init pixels
run knn-pixels knn --init pixels
run linprobe-random-patch7-avg-l4 linprobe --init none --model mae_vit_fashion_patch7 --pool avg --layers 4
run knn-random-patch7-avg-l4 knn --init none --model mae_vit_fashion_patch7 --pool avg --layers 4
"${PYTHON:-python}" results/collect.py runs \
    "$out"/{linprobe-pixels,knn-pixels,linprobe-random-patch7-avg-l4,knn-random-patch7-avg-l4} --output "$here/results.csv"
