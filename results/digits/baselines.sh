#!/usr/bin/env bash
# Raw-pixel and random-encoder baselines on scikit-learn's handwritten digits (--dataset digits: 1,297 train
# images, of which 10% (130) are the validation split, and 500 test images), same protocol as Fashion-MNIST's
# results/baselines: solved probe (C chosen on validation) and kNN (k=20). Pixels at the native 8x8.
set -euo pipefail
out=${OUT:-results/digits}
maelab linprobe --init pixels --dataset digits --output-dir $out/linprobe-pixels > $out/linprobe-pixels.log 2>&1
maelab knn --init pixels --dataset digits --output-dir $out/knn-pixels > $out/knn-pixels.log 2>&1
maelab linprobe --init none --model mae_vit_fashion_patch7 --dataset digits --pool avg --layers 4 --output-dir $out/linprobe-random-patch7-avg-l4 > $out/linprobe-random-patch7-avg-l4.log 2>&1
maelab knn --init none --model mae_vit_fashion_patch7 --dataset digits --pool avg --layers 4 --output-dir $out/knn-random-patch7-avg-l4 > $out/knn-random-patch7-avg-l4.log 2>&1
