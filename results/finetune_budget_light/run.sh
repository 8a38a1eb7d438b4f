#!/usr/bin/env bash
# The light fine-tuning recipe's accuracy against fine-tuning budget: the 20-minute point (from the 60-minute
# encoder of results/budget_curve, seed 1), then results.csv over the three budgets and curve.py's fit and figure.
# The 10- and 60-minute points are results/finetune_recipe/run.sh's arm light-blr2e-3 and
# results/finetune_60m_light/run.sh's MAE arm; their run directories must be under RUNS for the table.
#
#   bash results/finetune_budget_light/run.sh
#
# Environment: RUNS (default runs), CKPT (default RUNS/budget_curve/cells/budget60m-seed1/pretrain), MAELAB
# (default maelab), PYTHON (default python). Paths are relative to the repository root. About 21 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/finetune_budget_light
runs=${RUNS:-runs}
out=$runs/finetune_budget_light
ckpt=${CKPT:-$runs/budget_curve/cells/budget60m-seed1/pretrain}
python=${PYTHON:-python}
mkdir -p "$out"
if [ ! -f "$out/mae-20m/metrics.json" ]; then
    rm -rf "$out/mae-20m"
    cmd=("${MAELAB:-maelab}" finetune --checkpoint "$ckpt" --mixup 0 --cutmix 0 --crop-scale 0.35 --rand-augment=
         --reprob 0 --blr 2e-3 --time-budget 20m --output-dir "$out/mae-20m")
    echo "${cmd[*]}" >> "$here/commands.txt"
    echo "date: $(date -u +%FT%TZ); commit: $(git rev-parse HEAD); cpus: $(nproc)" >> "$here/machine.txt"
    "${cmd[@]}" > "$out/mae-20m.log" 2>&1
fi
"$python" results/collect.py runs "10m=$runs/finetune_recipe/mae-light-blr2e-3" "20m=$out/mae-20m" \
    "60m=$runs/finetune_60m_light/mae" --output "$here/results.csv"
"$python" "$here/curve.py" > "$here/curve.txt"
cat "$here/curve.txt"
