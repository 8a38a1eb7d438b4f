#!/usr/bin/env bash
# kNN on whitened features (`maelab knn --whiten N`): first the choice of N on the validation split with cached
# features (feats.py, knn_white.py, knn.py -> lab.csv), then `maelab knn` end to end with the chosen N on the default
# 10-minute run's three seeds, raw pixels and the 60-minute runs' three seeds (-> results.csv).
#
#   bash results/knn_whitening/run.sh
#
# Environment: RUNS (default runs; it must hold the pre-training runs of results/recipe_search/run.sh as
# RUNS/recipe_final and of results/budget_curve/run.sh as RUNS/budget_curve), MAELAB (default maelab), PYTHON
# (default python). The kNN run directories and cached features go to RUNS/knn_whitening. Paths are relative to the
# repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/knn_whitening
runs=${RUNS:-runs}
out=$runs/knn_whitening
maelab=${MAELAB:-maelab}
python=${PYTHON:-python}
mkdir -p "$out"
# 1. The component count, chosen on validation (the test column is printed beside it and chooses nothing).
"$python" $here/feats.py "$runs/recipe_final/cells/patch7-seed0/pretrain" avg 4 "$out/fm_default_avg4.pt"
"$python" $here/feats.py pixels token 1 "$out/fm_pixels.pt"
{
    echo "features,transform,val_top1,test_top1"
    "$python" $here/knn_white.py "$out/fm_default_avg4.pt" 32,64,128,256,384,512,768
    "$python" $here/knn_white.py "$out/fm_pixels.pt" 32,64,128,256,384,512,784
    "$python" $here/knn.py "$out/fm_default_avg4.pt"
    "$python" $here/knn.py "$out/fm_pixels.pt"
} > $here/lab.csv
# 2. maelab knn end to end with the chosen N.
knn() {  # knn NAME OPTIONS...
    local name=$1
    shift
    "$maelab" knn "$@" --output-dir "$out/$name" --no-tensorboard > "$out/$name.log" 2>&1
    tail -1 "$out/$name.log"
}
for s in 0 1 2; do
    knn default-seed$s --checkpoint "$runs/recipe_final/cells/patch7-seed$s/pretrain" --pool avg --layers 4 --whiten 768
done
knn pixels --init pixels --whiten 384
knn budget60m --checkpoint "$runs/budget_curve/cells/budget60m-seed0/pretrain" --pool avg --layers 4 --whiten 768
for s in 1 2; do
    knn budget60m-seed$s --checkpoint "$runs/budget_curve/cells/budget60m-seed$s/pretrain" --pool avg --layers 4 \
        --whiten 768
done
"$python" results/collect.py runs "$out"/{default-seed0,default-seed1,default-seed2,pixels,budget60m} \
    "$out"/{budget60m-seed1,budget60m-seed2} --output $here/results.csv
