#!/usr/bin/env bash
# The GPU benchmark for issue 5, sized for one call of the device tool (under its 10-minute limit):
# ViT-B and ViT-L pre-training steps (fp32, bf16 autocast, torch.compile, mask tokens in the encoder,
# 1-block decoder, activation checkpointing), each against the same process's matmul peak, then the
# JPEG data path alone (CPU decode with workers and nvJPEG decode on the GPU) next to a bf16 ViT-B step.
# The JPEG folder is generated on the machine (ImageNet-like 500x375 images), since no data travels.
#
# From this machine, with the wheels of the packages the GPU image lacks in .whl/ (README there):
#   device run  command="bash results/bench/gpu/run_gpu.sh"  carry=[".whl"]
# Outputs go to $OUT (the device tool's folder) or the first argument (default results/bench/gpu).
set -uo pipefail
cd "$(dirname "$0")/../../.."
DEST=${OUT:-${1:-results/bench/gpu}}
mkdir -p "$DEST"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
{
  date -u
  nvidia-smi 2>&1 | head -15
  nproc
  python3 -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__,
    torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")'
} > "$DEST/machine.txt" 2>&1

JPEGS=/tmp/maelab-jpegs
if [[ ! -d $JPEGS ]]; then
  python3 - "$JPEGS" "${N_JPEGS:-2000}" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

root, rng = Path(sys.argv[1]), np.random.default_rng(0)
for i in range(int(sys.argv[2])):
    # Smooth gradients plus noise: JPEGs of about ImageNet's size and entropy, not flat images.
    y, x = np.mgrid[0:375, 0:500]
    base = (np.stack([x * rng.uniform(0.2, 0.6), y * rng.uniform(0.2, 0.6), (x + y) * 0.2], -1) % 256)
    img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    folder = root / f"class{i % 10}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
PY
fi

bench() { python3 -m maelab bench --device "$DEVICE" "$@" 2>&1 | tee -a "$DEST/run.log"; }
bench --models base --batch-sizes 64 --variants mae bf16 compile mask_tokens decoder1 grad_ckpt \
  --steps 10 --warmup 3 --output "$DEST/gpu-vit-base"
bench --models large --batch-sizes 32 --variants mae bf16 mask_tokens --steps 10 --warmup 3 \
  --output "$DEST/gpu-vit-large"
bench --models base --batch-sizes 128 --variants bf16 --steps 10 --warmup 3 --loader --dataset folder \
  --data "$JPEGS" --loader-workers "$(( $(nproc) - 2 ))" --output "$DEST/gpu-loader"
