#!/usr/bin/env bash
# The LARS probe's learning rate at small batch. 1. On cached features of the default 10-minute run (seed 0, mean
# patch token of the last 4 blocks) and of the digits run, lars.py trains maelab's LARS / SGD probe at the learning
# rates, batch sizes and epoch counts of the README's table (-> lars.csv). 2. `maelab linprobe` end to end on
# scikit-learn's digits: raw pixels (solved, LARS at the rule's lr 3.2 and at the paper's 0.025) and the digits run's
# features with --augment (-> results.csv, epochs.csv).
#
#   bash results/probe_lr/run.sh
#
# Environment: RUNS (default runs; it must hold RUNS/recipe_final and RUNS/recipe_digits from
# results/recipe_search/run.sh), MAELAB (default maelab), PYTHON (default python). Cached features and run
# directories go to RUNS/probe_lr. Paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/probe_lr
runs=${RUNS:-runs}
out=$runs/probe_lr
maelab=${MAELAB:-maelab}
python=${PYTHON:-python}
mkdir -p "$out"
fm=$out/fm_default_avg4.pt
digits=$out/digits_default_avg4.pt
"$python" results/knn_whitening/feats.py "$runs/recipe_final/cells/patch7-seed0/pretrain" avg 4 "$fm"
"$python" results/knn_whitening/feats.py "$runs/recipe_digits/cells/patch7-seed0/pretrain" avg 4 "$digits" digits
{
    echo "features,optimizer,lr,batch,epochs,steps,train_loss,val_top1,test_top1,weight_norm,seconds"
    "$python" $here/lars.py "$fm" 0.1,1,3,3.2,6.4,10,30 256 90
    "$python" $here/lars.py "$fm" 3,6 256 270
    "$python" $here/lars.py "$fm" 0.3,1,3,3.2,6.4 64 90
    "$python" $here/lars.py "$fm" 3,10,20 1024 90
    "$python" $here/lars.py "$fm" 0.03,0.1,0.3,1 256 90 sgd
    "$python" $here/lars.py "$digits" 0.1,3.2 64 90
    "$python" $here/lars.py "$digits" 3.2 64 900
    "$python" $here/lars.py "$digits" 3.2 64 2700
    "$python" $here/lars.py "$digits" 3.2 256 2700
} > $here/lars.csv
probe() {  # probe NAME OPTIONS...
    local name=$1
    shift
    "$maelab" linprobe "$@" --output-dir "$out/$name" --no-tensorboard > "$out/$name.log" 2>&1
    tail -1 "$out/$name.log"
}
probe digits-pixels-solved --init pixels --dataset digits
for lr in 3.2 0.025; do
    probe digits-pixels-$lr --init pixels --dataset digits --optimizer lars --batch-size 64 --lr $lr
    probe digits-augment-lr$lr --checkpoint "$runs/recipe_digits/cells/patch7-seed0/pretrain" --pool avg --layers 4 \
        --optimizer lars --augment --batch-size 64 --lr $lr
done
"$python" results/collect.py runs "$out"/{digits-pixels-solved,digits-pixels-3.2,digits-pixels-0.025} \
    "$out"/{digits-augment-lr3.2,digits-augment-lr0.025} --output $here/results.csv --epochs $here/epochs.csv
