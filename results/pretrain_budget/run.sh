#!/usr/bin/env bash
# The README's default run (`maelab pretrain` with no options: mae_vit_fashion, a 10-minute --time-budget)
# and its evaluations: the solved linear probe on the cls token (default) and on the mean patch token of
# the last 4 blocks, and kNN (k=20). Run from the repository root; OUT picks the output folder.
set -euo pipefail
out=${OUT:-results/pretrain_budget}
uptime > $out/load.txt
maelab pretrain --output-dir $out/run > $out/pretrain.log 2>&1
uptime >> $out/load.txt
maelab linprobe --checkpoint $out/run --output-dir $out/linprobe > $out/linprobe.log 2>&1
maelab linprobe --checkpoint $out/run --pool avg --layers 4 --output-dir $out/linprobe-avg-l4 > $out/linprobe-avg-l4.log 2>&1
maelab knn --checkpoint $out/run --output-dir $out/knn > $out/knn.log 2>&1
uptime >> $out/load.txt
