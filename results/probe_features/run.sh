#!/usr/bin/env bash
# Which frozen features of the default 10-minute run does the solved linear probe read best? Chosen on the
# validation split only (6,000 images held out of the training split); the test column is reported, not used.
# The default run's evaluation reads the mean patch token of the last 4 of 6 blocks (results/recipe_search/final).
#
#   CKPTS="/work/runs/recipe_final/cells/patch7-seed0/pretrain" bash results/probe_features/run.sh
#
# CKPTS: the pre-training run directories (seed0 seed1 ...); FEATURES: "pool:layers" pairs. Run from the
# repository root; a rerun skips a finished probe (metrics.json). About 4 minutes a probe on the 2-core CPU.
set -euo pipefail
out=${OUT:-results/probe_features}
maelab=${MAELAB:-$( [ -x .venv/bin/maelab ] && echo .venv/bin/maelab || echo maelab )}
features=${FEATURES:-"avg:6 avg:2 token:4 avg:1"}
: "${CKPTS:?set CKPTS to the pre-training run directories, one per seed}"
mkdir -p "$out"
echo "date: $(date -u +%FT%TZ); commit: $(git rev-parse HEAD); cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" >> "$out/machine.txt"
for ckpt in $CKPTS; do
    seed=$(basename "$(dirname "$ckpt")")  # patch7-seed0
    for f in $features; do
        name=$seed-${f%%:*}-l${f##*:}
        [ -f "$out/$name/metrics.json" ] && continue
        rm -rf "${out:?}/$name"
        cmd=("$maelab" linprobe --checkpoint "$ckpt" --pool "${f%%:*}" --layers "${f##*:}" --output-dir "$out/$name"
             --no-tensorboard)
        echo "${cmd[*]}" >> "$out/commands.txt"
        "${cmd[@]}" > "$out/$name.log" 2>&1
        tail -1 "$out/$name.log"
    done
done
