#!/usr/bin/env bash
# The one-class protocol on Fashion-MNIST: for each normal class K, pre-train mae_vit_fashion
# on class K's 6,000 training images only (--classes K) within a time budget, then score the full 10,000-image
# test split with class K normal and the other nine anomalous, by reconstruction error and by kNN distance to
# class K's training embeddings (both at maelab anomaly's defaults). Then choose_knn.py chooses the kNN score's
# options (pooling, blocks, whitening, distance, k, mirror averaging) on a validation set drawn from the *training*
# split, one setting for all classes, and every class's test split is scored once more with it (class-K/anomaly-chosen):
# nothing is chosen on the test split. summarize.py then writes the per-class and mean AUROC table beside the
# published references.
#
#   bash results/anomaly_oneclass/run.sh 10m            # every class, 10 minutes of pre-training each
#   bash results/anomaly_oneclass/run.sh 20s 3          # smoke test: class 3 only, 20 seconds
#   bash results/anomaly_oneclass/run.sh 2steps 3       # smoke test on a busy machine: 2 optimizer steps
#
# Arguments: the per-class --time-budget (default 10m; or Nsteps: --steps N, a fixed schedule for smoke tests on
# a machine too busy to plan a budget), then the normal classes (default 0 1 ... 9).
# Environment: RUNS (default runs), OUT (the class directories with checkpoints, logs and per-image scores; default
# RUNS/anomaly_oneclass/budget-<budget>), RECORD (where the tables are copied at the end: results.csv, results.md,
# selection.*, commands.txt, machine.txt; default results/anomaly_oneclass/budget-<budget>), MAELAB (default
# maelab), PYTHON (default python), PRETRAIN_ARGS / ANOMALY_ARGS (extra options, e.g. --device cuda). Paths are
# relative to the repository root. Rerunning continues: a class with anomaly.json is skipped, a finished
# pre-training run is scored without training again, an existing selection.json is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-10m}
shift || true
classes=("$@")
[ ${#classes[@]} -gt 0 ] || classes=(0 1 2 3 4 5 6 7 8 9)
here=results/anomaly_oneclass
out=${OUT:-${RUNS:-runs}/anomaly_oneclass/budget-$budget}
record=${RECORD:-$here/budget-$budget}
maelab=${MAELAB:-maelab}
read -r -a pretrain_args <<< "${PRETRAIN_ARGS:-}"
read -r -a anomaly_args <<< "${ANOMALY_ARGS:-}"
if [[ $budget =~ ^([0-9]+)steps$ ]]; then schedule=(--steps "${BASH_REMATCH[1]}"); else schedule=(--time-budget "$budget"); fi
mkdir -p "$out"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null)"
    echo "gpu: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    echo "budget per class: $budget; classes: ${classes[*]}"
} >> "$out/machine.txt"

for k in "${classes[@]}"; do
    dir=$out/class-$k
    if [ -f "$dir/anomaly/anomaly.json" ]; then
        echo "class $k: done already ($dir/anomaly/anomaly.json)"
        continue
    fi
    mkdir -p "$dir"
    if [ ! -f "$dir/pretrain/checkpoint-last.safetensors" ]; then
        cmd=("$maelab" pretrain --classes "$k" "${schedule[@]}" --no-tensorboard --output-dir "$dir/pretrain"
             ${pretrain_args[@]+"${pretrain_args[@]}"})
        echo "${cmd[*]}" >> "$out/commands.txt"
        echo "class $k: pre-training ($budget)"
        "${cmd[@]}" > "$dir/pretrain.log" 2>&1
    fi
    rm -rf "$dir/anomaly"  # an interrupted scoring left no anomaly.json: score again
    cmd=("$maelab" anomaly "$dir/pretrain" --normal-class "$k" --output-dir "$dir/anomaly"
         ${anomaly_args[@]+"${anomaly_args[@]}"})
    echo "${cmd[*]}" >> "$out/commands.txt"
    echo "class $k: scoring the test split"
    "${cmd[@]}" > "$dir/anomaly.log" 2>&1
    echo "load after class $k: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" >> "$out/machine.txt"
done
python=${PYTHON:-python}
if [ ${#classes[@]} -eq 10 ]; then  # the choice is one setting for all ten classes
    if [ ! -f "$out/selection.json" ]; then
        echo "choosing the kNN score's options on the training split"
        "$python" "$here/choose_knn.py" "$out" > "$out/choose_knn.log" 2>&1
    fi
    read -r -a chosen <<< "$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["anomaly_args"])' \
        "$out/selection.json")"
    for k in "${classes[@]}"; do
        dir=$out/class-$k
        [ -f "$dir/anomaly-chosen/anomaly.json" ] && continue
        rm -rf "$dir/anomaly-chosen"
        cmd=("$maelab" anomaly "$dir/pretrain" --normal-class "$k" "${chosen[@]}" --output-dir "$dir/anomaly-chosen"
             ${anomaly_args[@]+"${anomaly_args[@]}"})
        echo "${cmd[*]}" >> "$out/commands.txt"
        echo "class $k: scoring the test split with the chosen kNN options (${chosen[*]})"
        "${cmd[@]}" > "$dir/anomaly-chosen.log" 2>&1
    done
fi
"$python" "$here/summarize.py" "$out"
mkdir -p "$record"
for f in results.csv results.md selection.csv selection.json selection.md commands.txt machine.txt; do
    if [ -f "$out/$f" ]; then cp "$out/$f" "$record/$f"; fi
done
