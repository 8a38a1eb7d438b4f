#!/usr/bin/env bash
# Screenshots of `maelab demo` for the docs (docs/demo-fashion.png, docs/demo-photo.png) from a real run: pre-trains
# the model the screenshots show when it is not there yet (mae_vit_fashion, 3 epochs: about 9 minutes on a 2-core CPU),
# then drives headless Chromium through screenshot.py. Needs Playwright and a `chromium` on PATH.
#
#   bash results/demo/run.sh
#
# Environment: RUNS (default runs), CKPT (the pre-training run to serve; default RUNS/default-idle), MAELAB (default
# maelab), PYTHON (default python). Paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
ckpt=${CKPT:-${RUNS:-runs}/default-idle}
[ -f "$ckpt/checkpoint-last.safetensors" ] || "${MAELAB:-maelab}" pretrain --model mae_vit_fashion --epochs 3 \
    --output-dir "$ckpt"
"${PYTHON:-python}" results/demo/screenshot.py "$ckpt" 2>&1 | tee results/demo/screenshot_output.txt
