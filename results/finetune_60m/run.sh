#!/usr/bin/env bash
# Fine-tuning at 60 CPU-minutes: `maelab finetune --time-budget 60m` with its default recipe (the paper's: layer
# decay 0.75, drop path 0.1, mixup 0.8, cutmix 1.0, RandAugment, label smoothing 0.1, 1 warmup epoch), from the
# encoder pre-trained for 60 minutes (results/budget_curve, seed 0), then the same ViT from random init with the same
# budget. checkpoint-best is chosen on the 6,000-image validation split; the test split is reported once.
#
#   bash results/finetune_60m/run.sh
#   BUDGET=30s OUT=/tmp/ft60 RECORD=/tmp/ft60 bash results/finetune_60m/run.sh      # smoke test
#
# Environment: RUNS (default runs), CKPT (the pre-training run to fine-tune; default
# RUNS/budget_curve/cells/budget60m-seed0/pretrain, made by results/budget_curve/run.sh), OUT (the run directories
# and logs; default RUNS/finetune_60m), RECORD (where results.csv, epochs.csv, curve.png, commands.txt and
# machine.txt go; default results/finetune_60m), OPTIONS (a recipe's finetune options for both arms, e.g. the one
# results/finetune_60m_light/run.sh passes), BUDGET (default 60m), MAELAB (default maelab), PYTHON (default
# python). Paths are relative to the repository root. About 2 hours on a 2-core CPU; a rerun skips a finished arm.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-runs}
out=${OUT:-$runs/finetune_60m}
record=${RECORD:-results/finetune_60m}
ckpt=${CKPT:-$runs/budget_curve/cells/budget60m-seed0/pretrain}
budget=${BUDGET:-60m}
maelab=${MAELAB:-maelab}
mkdir -p "$out" "$record"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    echo "budget: $budget; checkpoint: $ckpt"
} >> "$record/machine.txt"
arm() {  # arm NAME OPTIONS...: one fine-tuning run, started again from scratch if an earlier one did not finish
    local name=$1
    shift
    [ -f "$out/$name/metrics.json" ] && { echo "$name: done already"; return; }
    rm -rf "${out:?}/$name"
    echo "maelab finetune $* --time-budget $budget --output-dir $out/$name" >> "$record/commands.txt"
    "$maelab" finetune "$@" --time-budget "$budget" --output-dir "$out/$name" > "$out/$name.log" 2>&1
}
# shellcheck disable=SC2086  # the options split on spaces on purpose
arm mae --checkpoint "$ckpt" ${OPTIONS:-}
# shellcheck disable=SC2086
arm scratch --init none --model mae_vit_fashion_patch7 ${OPTIONS:-}
python=${PYTHON:-python}
"$python" results/collect.py runs "$out/mae" "$out/scratch" --output "$record/results.csv" --epochs "$record/epochs.csv"
"$python" results/finetune_60m/summarize.py "$record"
