#!/usr/bin/env bash
# After round 1's blr5e-4 cell: stop round 1 (width128 is dropped for round 2), run round 2, pick the winner on
# validation, run it with 3 seeds on the full training split, then on digits.
set -uo pipefail
echo -20 > /proc/self/autogroup
AG=$(cut -d' ' -f1 /proc/self/autogroup)
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/tmp/wt/src
R=/tmp/wt/results/recipe_search
log() { echo "$(date +%T) $*" >> /work/runs/chain.log; }
until grep -q "width128-seed0: running" /work/runs/recipe_search.log; do sleep 5; done
pkill -f "maelab ablate results/recipe_search/sweep.yaml"; pkill -f "recipe_search/cells/width128"; sleep 3
pkill -f "quiet_planning.sh /work/runs/recipe_search "; rm -rf /work/runs/recipe_search/cells/width128-seed0
log "round 1 stopped before width128"
sweep() {  # name yaml
  setsid /work/runs/quiet_planning.sh /work/runs/$1 "$AG" > /dev/null 2>&1 &
  local w=$!
  cd /tmp/wt && nice -n -10 maelab ablate "$2" --output-dir /work/runs/$1 >> /work/runs/$1.log 2>&1
  log "$1 exit $?"; kill $w 2>/dev/null; pkill -f "quiet_planning.sh /work/runs/$1 "
}
cp /work/main/results/recipe_search/round2.yaml $R/round2.yaml
sweep round2 $R/round2.yaml
/work/main/.venv/bin/python /work/runs/make_final.py >> /work/runs/chain.log 2>&1 || exit 1
sweep recipe_final $R/final.yaml
sweep recipe_digits $R/digits.yaml
log "chain done"
