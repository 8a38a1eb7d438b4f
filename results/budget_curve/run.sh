#!/usr/bin/env bash
# The default recipe at a 60-minute pre-training budget, seeds 0, 1 and 2 (curve.yaml), each evaluated as the
# 10-minute runs are: solved probe and kNN (k=20) on the mean patch token of the last 4 blocks. The probe on all 6
# blocks and the whitened kNN of the same encoders are run by results/probe_features/run.sh and
# results/knn_whitening/run.sh (see README.md).
#
#   bash results/budget_curve/run.sh                       # all three seeds, about 3.3 hours on a 2-core CPU
#   bash results/budget_curve/run.sh --only budget60m-seed1
#
# Environment: RUNS (default runs; the sweep's output goes to RUNS/budget_curve, checkpoints included), MAELAB
# (default maelab), PYTHON (default python). Arguments are passed to `maelab ablate`. Writes results.csv here.
# Resumable: a rerun continues where it stopped. Paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/budget_curve
out=${RUNS:-runs}/budget_curve
"${MAELAB:-maelab}" ablate $here/curve.yaml --output-dir "$out" "$@"
"${PYTHON:-python}" results/collect.py cells "$out" --output $here/results.csv
