#!/usr/bin/env bash
# While a sweep cell is planning its --time-budget (from its start until the "--time-budget ... optimizer steps"
# line), pause every other python process on the machine so the step-time measurement sees a quiet machine.
ROOT=$1; AG=$2   # sweep run dir, autogroup name of the sweep (e.g. /autogroup-42)
while true; do
  for log in "$ROOT"/cells/*/stdout.log; do
    [[ -f $log ]] || continue
    d=$(dirname "$log")
    [[ -f $d/pretrain.done.json ]] && continue
    if ! grep -q "optimizer steps (" "$log"; then
      stopped=()
      for pid in $(pgrep -f python); do
        ag=$(cut -d' ' -f1 /proc/$pid/autogroup 2>/dev/null) || continue
        [[ $ag == "$AG" ]] && continue
        kill -STOP "$pid" 2>/dev/null && stopped+=("$pid")
      done
      echo "$(date +%T) paused ${#stopped[@]} for $(basename "$d")" >> "$ROOT.quiet.log"
      t0=$SECONDS
      while ! grep -q "optimizer steps (" "$log" && ! [[ -f $d/pretrain.done.json ]] && (( SECONDS - t0 < 120 )); do
        sleep 1
        for pid in $(pgrep -f python); do   # new processes started meanwhile
          ag=$(cut -d' ' -f1 /proc/$pid/autogroup 2>/dev/null) || continue
          [[ $ag == "$AG" ]] && continue
          kill -STOP "$pid" 2>/dev/null && stopped+=("$pid")
        done
      done
      kill -CONT "${stopped[@]}" 2>/dev/null
      echo "$(date +%T) resumed ${#stopped[@]}" >> "$ROOT.quiet.log"
    fi
  done
  sleep 2
done
