#!/usr/bin/env bash
# Which frozen features of the default 10-minute run does the solved linear probe read best? Chosen on the
# validation split only (6,000 images held out of the training split); the test column is reported, not used.
# The default run's own evaluation reads the mean patch token of the last 4 of 6 blocks (results/recipe_search).
#
#   bash results/probe_features/run.sh                                  # seed 0, four features
#   CKPTS="runs/recipe_final/cells/patch7-seed1/pretrain runs/recipe_final/cells/patch7-seed2/pretrain" \
#       FEATURES="avg:6 avg:5" bash results/probe_features/run.sh       # the two best on seeds 1 and 2
#   CKPTS="runs/budget_curve/cells/budget60m-seed0/pretrain" FEATURES=avg:6 bash results/probe_features/run.sh
#
# Environment: RUNS (default runs), CKPTS (the pre-training run directories; default
# RUNS/recipe_final/cells/patch7-seed0/pretrain, made by results/recipe_search/run.sh), FEATURES ("pool:layers"
# pairs), MAELAB (default maelab), PYTHON (default python). Probes go to RUNS/probe_features; results.csv here
# collects every probe there and the default run's own avg-l4 probes. Paths are relative to the repository root;
# a rerun skips a finished probe. About 4 minutes a probe on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/probe_features
runs=${RUNS:-runs}
out=$runs/probe_features
maelab=${MAELAB:-maelab}
features=${FEATURES:-"avg:6 avg:2 token:4 avg:1"}
ckpts=${CKPTS:-$runs/recipe_final/cells/patch7-seed0/pretrain}
mkdir -p "$out"
echo "date: $(date -u +%FT%TZ); commit: $(git rev-parse HEAD); cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo \
    | cut -d: -f2- | sed 's/^ //')" >> "$here/machine.txt"
for ckpt in $ckpts; do
    seed=$(basename "$(dirname "$ckpt")")  # patch7-seed0, budget60m-seed0
    for f in $features; do
        name=$seed-${f%%:*}-l${f##*:}
        [ -f "$out/$name/metrics.json" ] && continue
        rm -rf "${out:?}/$name"
        cmd=("$maelab" linprobe --checkpoint "$ckpt" --pool "${f%%:*}" --layers "${f##*:}" --output-dir "$out/$name"
             --no-tensorboard)
        echo "${cmd[*]}" >> "$here/commands.txt"
        "${cmd[@]}" > "$out/$name.log" 2>&1
        tail -1 "$out/$name.log"
    done
done
own=()
for s in 0 1 2; do
    probe=$runs/recipe_final/cells/patch7-seed$s/linprobe
    [ -f "$probe/metrics.json" ] && own+=("patch7-seed$s-avg-l4=$probe")
done
"${PYTHON:-python}" results/collect.py runs ${own[@]+"${own[@]}"} "$out"/*/ --output "$here/results.csv"
"${PYTHON:-python}" "$here/summarize.py"
