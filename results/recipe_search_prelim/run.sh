#!/usr/bin/env bash
# usage: research/run.sh NAME [pretrain flags...]   -> pretrain into research/runs/NAME, then probe (val only)
# env PROBE_ARGS: extra args for probe.py
set -u
cd /tmp/exp
NAME=$1; shift
PY=/work/main/.venv/bin/python
export PYTHONPATH=/tmp/exp/src
OUT=research/runs/$NAME
echo "$PY research/pt.py --output-dir $OUT --no-tensorboard --vis-every 1000 $*" > research/results/$NAME.cmd
t0=$(date +%s.%N)
$PY research/pt.py --output-dir $OUT --no-tensorboard --vis-every 1000 "$@" > research/results/$NAME.train.log 2>&1
rc=$?
t1=$(date +%s.%N)
echo "{\"train_rc\": $rc, \"train_wall_s\": $(echo "$t1 - $t0" | bc), \"start\": \"$(date -d @${t0%.*} +%T)\", \"load_at_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" > research/results/$NAME.wall.json
$PY research/probe.py $OUT research/results/$NAME.probe.json ${PROBE_ARGS:-$(cat /tmp/exp/research/probe_args.txt 2>/dev/null)} > research/results/$NAME.probe.log 2>&1
echo "probe rc $?" >> research/results/$NAME.probe.log
