#!/usr/bin/env bash
# The recipe search: the best MAE recipe for 10 CPU-minutes of pre-training on Fashion-MNIST, chosen on the
# validation split. Round 1 (sweep.yaml) changes one thing of mae_vit_fashion at a time, round 2 (round2.yaml) spends
# patch 7's cheap tokens; make_final.py ranks both rounds by the validation probe and writes final.yaml (the winner,
# 3 seeds, probe trained on all 54,000 training images) and digits.yaml (the winner on scikit-learn's digits).
#
#   bash results/recipe_search/run.sh          # about 3 hours on a 2-core CPU; resumable
#
# Environment: RUNS (default runs; the sweeps' output directories, checkpoints included, go to RUNS/recipe_search,
# RUNS/round2, RUNS/recipe_final and RUNS/recipe_digits, where later experiments read them), MAELAB (default
# maelab), PYTHON (default python). Writes results.csv and recon.png here. Paths are relative to the repository root.
# Each cell plans its steps from its own measured step time, so run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/recipe_search
runs=${RUNS:-runs}
maelab=${MAELAB:-maelab}
python=${PYTHON:-python}
echo "date: $(date -u +%FT%TZ); commit: $(git rev-parse HEAD); cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)" \
    >> $here/machine.txt
"$maelab" ablate $here/sweep.yaml --output-dir "$runs/recipe_search"
"$maelab" ablate $here/round2.yaml --output-dir "$runs/round2"
"$python" $here/make_final.py "$runs" $here
"$maelab" ablate $here/final.yaml --output-dir "$runs/recipe_final"
"$maelab" ablate $here/digits.yaml --output-dir "$runs/recipe_digits"
"$python" results/collect.py cells "$runs"/{recipe_search,round2,recipe_final,recipe_digits} --output $here/results.csv
cp "$runs/recipe_final/cells/patch7-seed0/pretrain/recon.png" $here/recon.png
