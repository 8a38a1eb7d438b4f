#!/usr/bin/env bash
# Sequential training queue: takes the first not-yet-started line "NAME flags..." of queue.txt,
# trains it (one training job at a time, OMP_NUM_THREADS=1), then starts its probe in the background
# (which may overlap the next training) and moves on. Append lines to queue.txt while it runs.
cd /tmp/exp
export PYTHONPATH=/tmp/exp/src OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
while true; do
  line=$(grep -v '^#' research/queue.txt | while read -r n rest; do [[ -n $n && ! -e research/results/$n.cmd ]] && { echo "$n $rest"; break; }; done)
  [[ -z $line ]] && { sleep 15; continue; }
  read -r NAME FLAGS <<< "$line"
  OUT=research/runs/$NAME
  echo "OMP_NUM_THREADS=1 PYTHONPATH=/tmp/exp/src $PY research/pt.py --output-dir $OUT --no-tensorboard --vis-every 1000 $FLAGS" > research/results/$NAME.cmd
  t0=$(date +%s.%N)
  $PY research/pt.py --output-dir $OUT --no-tensorboard --vis-every 1000 $FLAGS > research/results/$NAME.train.log 2>&1
  rc=$?
  t1=$(date +%s.%N)
  echo "{\"train_rc\": $rc, \"train_wall_s\": $(echo "$t1 - $t0" | bc), \"start\": \"$(date -d @${t0%.*} +%T)\", \"end\": \"$(date -d @${t1%.*} +%T)\", \"threads\": 1}" > research/results/$NAME.wall.json
  ( $PY research/probe.py $OUT research/results/$NAME.probe.json $(cat research/probe_args.txt) > research/results/$NAME.probe.log 2>&1; echo "probe rc $?" >> research/results/$NAME.probe.log ) &
done
