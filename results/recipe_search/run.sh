#!/usr/bin/env bash
# Issue 16's recipe search on Fashion-MNIST (Debian's dataset-fashion-mnist), run with the code of the commit
# named in machine.txt (a detached worktree, so edits elsewhere never change a sweep half-way), one sweep at a time,
# at raised CPU priority so that other work on the 2-core machine does not eat the cells' time budgets.
# Resumable: rerunning continues where it stopped. Checkpoints stay in /work/runs; reports and logs are copied here.
# Usage: bash results/recipe_search/run.sh SWEEP_YAML RUN_DIR
set -euo pipefail
sweep=$1; runs=$2
here=$(cd "$(dirname "$0")" && pwd)
name=$(basename "$sweep" .yaml)
nice -n -10 maelab ablate "$sweep" --output-dir "$runs" 2>&1 | tee -a "$runs.log"
mkdir -p "$here/$name"
tar -C "$runs" --exclude='*.safetensors' --exclude='*.state.pt' -cf - . | tar -C "$here/$name" -xf -
