#!/usr/bin/env bash
# Reproduce results/eval/: every evaluation protocol on Fashion-MNIST's test set.
# Resumable: a step whose results folder already holds its output is skipped, and a finished
# run that was not collected yet is only copied.
# Usage (repository root): bash results/eval/run.sh [STEP ...]   (no STEP = all, in order)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=results/eval
RUNS=runs/eval
PRE=$RUNS/pretrain-10ep
mkdir -p "$RUNS"

machine() {
  echo "host: $(uname -srm); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  python3 -c 'import torch, timm; print(f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}")'
}

collect() {
  local run=$1 dest=$2
  for f in config.json log.jsonl metrics.json knn.json confusion.png recon.png loss.png; do
    [[ -f $run/$f ]] && cp "$run/$f" "$dest/"
  done
  return 0
}

# step NAME RUN_DIR DONE_FILE -- maelab ARGS...
step() {
  local name=$1 run=$2 result=$3; shift 4
  local dest=$OUT/$name
  if [[ -f $dest/$result ]]; then echo "skip $name (done)"; return 0; fi
  mkdir -p "$dest"
  printf "%q " "$@" | sed "s/ $//" > "$dest/command.txt"
  machine > "$dest/machine.txt"
  if [[ -f $run/$result ]]; then
    echo "collect $name (finished earlier)"
    echo "wall_time_s: not measured by this script (see epoch_time_s in log.jsonl)" >> "$dest/machine.txt"
    collect "$run" "$dest"
    return 0
  fi
  if [[ -e $run ]]; then echo "clearing unfinished $run"; rm -rf "$run"; fi
  local start=$(date +%s)
  if ! "$@" > "$dest/stdout.log" 2>&1; then echo "FAILED $name (see $dest/stdout.log)"; return 1; fi
  echo "wall_time_s: $(( $(date +%s) - start ))" >> "$dest/machine.txt"
  collect "$run" "$dest"
  echo "done $name"
}

ALL="${*:-}"
run_step() { local n=$1; shift; if [[ -z $ALL || " $ALL " == *" $n "* ]]; then step "$n" "$@"; fi; }

run_step pretrain-10ep $PRE recon_epoch010.png -- maelab pretrain --epochs 10 --knn-every 1 --vis-every 5 --output-dir $PRE
run_step linprobe-pixels $RUNS/linprobe-pixels metrics.json -- maelab linprobe --init pixels --output-dir $RUNS/linprobe-pixels
run_step knn-pixels $RUNS/knn-pixels knn.json -- maelab knn --init pixels --output-dir $RUNS/knn-pixels
run_step linprobe-mae10 $RUNS/linprobe-mae10 metrics.json -- maelab linprobe --checkpoint $PRE --output-dir $RUNS/linprobe-mae10
run_step knn-mae10 $RUNS/knn-mae10 knn.json -- maelab knn --checkpoint $PRE --output-dir $RUNS/knn-mae10
run_step linprobe-random $RUNS/linprobe-random metrics.json -- maelab linprobe --init none --output-dir $RUNS/linprobe-random
run_step finetune-mae10 $RUNS/finetune-mae10 metrics.json -- maelab finetune --checkpoint $PRE --epochs 2 --output-dir $RUNS/finetune-mae10
run_step finetune-scratch $RUNS/finetune-scratch metrics.json -- maelab finetune --init none --epochs 2 --output-dir $RUNS/finetune-scratch
run_step partial-k1 $RUNS/partial-k1 metrics.json -- maelab finetune --checkpoint $PRE --tune-blocks 1 --epochs 1 --output-dir $RUNS/partial-k1
run_step partial-k2 $RUNS/partial-k2 metrics.json -- maelab finetune --checkpoint $PRE --tune-blocks 2 --epochs 1 --output-dir $RUNS/partial-k2
run_step linprobe-mae3 $RUNS/linprobe-mae3 metrics.json -- maelab linprobe --checkpoint runs/default-idle --output-dir $RUNS/linprobe-mae3
# A lighter recipe for short schedules: the paper's, without mixup/cutmix.
run_step finetune-mae10-nomix $RUNS/finetune-mae10-nomix metrics.json -- maelab finetune --checkpoint $PRE --epochs 2 --mixup 0 --cutmix 0 --output-dir $RUNS/finetune-mae10-nomix
# Light recipe (no mixup/cutmix/RandAugment/erasing/smoothing): does fine-tuning itself work, or is the
# short schedule just drowned by the paper's regularization?
run_step finetune-mae10-light $RUNS/finetune-mae10-light metrics.json -- maelab finetune --checkpoint $PRE --epochs 1 --mixup 0 --cutmix 0 --rand-augment "" --reprob 0 --smoothing 0 --output-dir $RUNS/finetune-mae10-light
