#!/usr/bin/env bash
# Run (or continue) every built-in ablation sweep on Fashion-MNIST, one sweep at a time, and copy
# each sweep's report and raw logs (no checkpoints or optimizer states) into results/ablations/<sweep>/.
# Resumable: `maelab ablate` skips finished cells and redoes an interrupted cell's unfinished stage,
# so rerunning this script continues where it stopped.
# Each sweep runs the code of the commit checked out when it starts (a copy of src/ taken with
# git archive under runs/ablations/src-<commit>), so edits to the working tree never change a
# sweep half-way; the commit is recorded in results/ablations/<sweep>/machine.txt.
# Usage (repository root): bash results/ablations/run.sh [SWEEP ...]    (no SWEEP = all, in order)
#                          bash results/ablations/run.sh --collect      (only copy what finished so far)
#                          bash results/ablations/run.sh --baselines    (random-init and raw-pixel reference points)
# After each sweep, results/ablations/claims.md is regenerated (python results/ablations/claims.py).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=results/ablations
RUNS=runs/ablations
# The claims the paper's readers check first come first (mask_ratio's 8 main cells ran in an earlier session).
ORDER="target mask_sampling mask_tokens decoder_depth augmentation decoder_width schedule simmim_vs_mae mask_ratio finetune_decoder_depth finetune_mask_ratio"
# Sweeps that compare wall times train every cell themselves, so all of them are timed under the same load.
NO_REUSE=" mask_tokens simmim_vs_mae "
mkdir -p "$RUNS"

collect() {  # copy a sweep directory without checkpoints
  local name=$1
  [[ -d $RUNS/$name ]] || return 0
  mkdir -p "$OUT/$name"
  tar -C "$RUNS/$name" --exclude='*.safetensors' --exclude='*.state.pt' -cf - . | tar -C "$OUT/$name" -xf -
  python3 "$OUT/claims.py" > /dev/null  # refresh claims.md from every collected results.csv
}

machine() {
  echo "host: $(uname -srm); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (the 2 cores were shared with other sessions)"
  python3 -c 'import torch, timm; print(f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}")'
}

# Reference points under the sweeps' evaluation protocol (10,000-image train subset, full test split):
# the same linear probe and kNN on a random-init encoder and on raw pixels. Skipped once done.
# The fine-tuning sweeps' recipe from random init (the paper's "from scratch" reference) is finetune-none.
FINETUNE_ARGS="--epochs 5 --warmup-epochs 1 --mixup 0 --cutmix 0 --rand-augment '' --reprob 0"
baselines() {
  local dest=$OUT/baselines
  mkdir -p "$dest" "$RUNS/baselines"
  for name in linprobe-none knn-none linprobe-pixels knn-pixels finetune-none; do
      local cmd=${name%-*} init=${name#*-} run=$RUNS/baselines/$name
      [[ -f $dest/$name/stdout.log && ( -f $run/metrics.json || -f $run/knn.json ) ]] && continue
      rm -rf "$run"; mkdir -p "$dest/$name"
      local args="$cmd --init $init --train-subset 10000 --output-dir $run"
      [[ $cmd == finetune ]] && args="$args $FINETUNE_ARGS"
      echo "PYTHONPATH=src python -m maelab $args" > "$dest/$name/command.txt"
      machine > "$dest/$name/machine.txt"
      eval "PYTHONPATH=src /usr/bin/time -v python -m maelab $args" > "$dest/$name/stdout.log" 2>&1
      tar -C "$run" --exclude='*.safetensors' --exclude='*.state.pt' -cf - . | tar -C "$dest/$name" -xf -
  done
}

if [[ ${1:-} == --baselines ]]; then
  baselines
  exit 0
fi

if [[ ${1:-} == --collect ]]; then
  for name in $ORDER; do collect "$name"; done
  exit 0
fi

# A sweep whose file does not validate yet (exit 2: e.g. a model or target added by a later commit)
# is tried again after the others, with the commit checked out then.
run_sweep() {
  local name=$1
  commit=$(git rev-parse --short HEAD)
  src=$RUNS/src-$commit
  if [[ ! -d $src ]]; then mkdir -p "$src" && git archive HEAD src | tar -x -C "$src"; fi
  mkdir -p "$OUT/$name"
  {
    echo "=== $(date -u '+%Y-%m-%d %H:%M:%S UTC') commit $commit"
    echo "command: PYTHONPATH=$src/src python -m maelab ablate $name --output-dir $RUNS/$name$([[ $NO_REUSE == *" $name "* ]] && echo ' --no-reuse')"
    PYTHONPATH=$src/src machine
  } >> "$OUT/$name/machine.txt"
  local flags=""
  [[ $NO_REUSE == *" $name "* ]] && flags="--no-reuse"
  echo "$(date -u +%H:%M:%S) sweep $name (commit $commit) $flags"
  PYTHONPATH=$src/src python -m maelab ablate "$name" --output-dir "$RUNS/$name" $flags >> "$OUT/$name/ablate.log" 2>&1
  rc=$?
  echo "exit status $rc at $(date -u '+%H:%M:%S UTC')" >> "$OUT/$name/machine.txt"
  [[ $rc -ne 0 ]] && echo "sweep $name: exit $rc (see $OUT/$name/ablate.log)"
  collect "$name"
  return $rc
}

baselines
status=0
retry=""
for name in ${*:-$ORDER}; do
  run_sweep "$name"; rc=$?
  if [[ $rc -eq 2 ]]; then retry="$retry $name"; elif [[ $rc -ne 0 ]]; then status=1; fi
done
for name in $retry; do
  run_sweep "$name" || status=1
done
exit $status
