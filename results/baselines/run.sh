#!/usr/bin/env bash
# Baselines for the README's results table (issue 16): raw pixels and a random-init encoder of the default
# preset, under the solved probe (--optimizer lbfgs, C chosen on the 10% validation split) and kNN (k=20).
# Run from the repository root; each writes its run directory here, and its log beside it.
set -euo pipefail
out=${OUT:-results/baselines}
maelab linprobe --init pixels --output-dir $out/linprobe-pixels > $out/linprobe-pixels.log 2>&1
maelab knn --init pixels --output-dir $out/knn-pixels > $out/knn-pixels.log 2>&1
maelab linprobe --init none --model mae_vit_fashion --output-dir $out/linprobe-random > $out/linprobe-random.log 2>&1
maelab knn --init none --model mae_vit_fashion --output-dir $out/knn-random > $out/knn-random.log 2>&1
# The control for the default since issue 16's recipe search (same architecture and features, random weights):
maelab linprobe --init none --model mae_vit_fashion_patch7 --pool avg --layers 4 --output-dir $out/linprobe-random-patch7-avg-l4 > $out/linprobe-random-patch7-avg-l4.log 2>&1
maelab knn --init none --model mae_vit_fashion_patch7 --pool avg --layers 4 --output-dir $out/knn-random-patch7-avg-l4 > $out/knn-random-patch7-avg-l4.log 2>&1
maelab linprobe --init none --model mae_vit_fashion_patch7 --pool avg --layers 6 --output-dir $out/linprobe-random-patch7-avg-l6 > $out/linprobe-random-patch7-avg-l6.log 2>&1
