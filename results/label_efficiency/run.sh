#!/usr/bin/env bash
# Label efficiency on Fashion-MNIST: what pre-training adds when only K images per class carry labels.
#
#   bash results/label_efficiency/run.sh [STAGE ...]     stages: pretrain probes finetune summary (default: all)
#
# Every row uses the same label draws (--labels-per-class K --label-seed S, S = 0, 1, 2: K images per class from
# the 54,000 training images outside the validation split) and the same selection protocol: every choice (the
# probe's L2 strength, the fine-tuning checkpoint) is made on a validation set of at most K images per class drawn
# from the validation split; the 10,000 test images are scored once. Settings are fixed in advance across budgets.
#
# Environment: RUNS (default runs; run directories go to RUNS/label_efficiency), MAELAB (default maelab), PYTHON
# (default python), BUDGETS (default "10 100 1000"; "all" runs once, with every label), SEEDS (default "0 1 2"),
# PRETRAIN_STEPS (default 2000: what `maelab pretrain`'s default 10-minute budget plans on an idle 2-core EPYC VM,
# results/recipe_search: 1,752-2,062 steps; fixed steps keep the encoder the same on a loaded machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/label_efficiency
runs=${RUNS:-runs}
out=$runs/label_efficiency
maelab=${MAELAB:-maelab}
python=${PYTHON:-python}
budgets=${BUDGETS:-10 100 1000}
seeds=${SEEDS:-0 1 2}
mae=$out/pretrain-10m-seed0
stages=${*:-pretrain probes finetune summary}
mkdir -p "$out"

run() {  # run NAME COMMAND OPTIONS...: skipped when NAME finished before (its metrics.json exists)
    local name=$1
    shift
    if [[ -f $out/$name/metrics.json || -f $out/$name/knn.json ]]; then return; fi
    rm -rf "${out:?}/$name"
    "$maelab" "$@" --output-dir "$out/$name" --no-tensorboard > "$out/$name.log" 2>&1
    tail -1 "$out/$name.log"
}

budget_args() {  # budget_args K SEED: the label-budget options of one cell
    if [[ $1 == all ]]; then echo ""; else echo "--labels-per-class $1 --label-seed $2"; fi
}

for stage in $stages; do
    case $stage in
    pretrain)  # the default recipe, every training image, no labels
        [[ -f $mae/checkpoint-last.safetensors ]] || "$maelab" pretrain --steps "${PRETRAIN_STEPS:-2000}" --seed 0 \
            --output-dir "$mae" --no-tensorboard > "$out/pretrain-10m-seed0.log" 2>&1 ;;
    probes)  # the solved linear probe on frozen features (default features: mean patch token of all blocks)
        for k in $budgets; do
            for s in $seeds; do
                # shellcheck disable=SC2046
                run "probe-pixels-k$k-s$s" linprobe --init pixels $(budget_args "$k" "$s")
                # shellcheck disable=SC2046
                run "probe-random-k$k-s$s" linprobe --init none --model mae_vit_fashion_patch7 $(budget_args "$k" "$s")
                # shellcheck disable=SC2046
                run "probe-mae10m-k$k-s$s" linprobe "$mae" $(budget_args "$k" "$s")
                [[ $k == all ]] && break
            done
        done ;;
    finetune)
        bash $here/finetune.sh ;;
    summary)
        "$python" $here/summarize.py "$out" > $here/results.md ;;
    *) echo "unknown stage $stage (pretrain probes finetune summary)" >&2; exit 2 ;;
    esac
done
