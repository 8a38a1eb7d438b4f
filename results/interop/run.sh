#!/usr/bin/env bash
# Import/export walk-through on a tiny run (seconds on a CPU); the README's commands, as run.
# Usage: bash results/interop/run.sh [WORKDIR]   (outputs in WORKDIR, default a fresh temp dir)
# Environment: MAELAB (default maelab), PYTHON (default python; needs timm, transformers and onnxruntime).
# log.txt beside this script is the output of one run; recon-from-hf.png the reconstruction it drew.
set -euo pipefail
W=${1:-$(mktemp -d)}
maelab() { "${MAELAB:-maelab}" "$@"; }
set -x
maelab pretrain --model debug --dataset synthetic --synthetic-size 128 --batch-size 32 --epochs 1 --output-dir "$W/run"
maelab export "$W/run" --to timm -o "$W/enc-timm.safetensors"
maelab export "$W/run" --to hf -o "$W/hf"
maelab export "$W/run" --to onnx -o "$W/enc.onnx"
maelab export "$W/run" --to safetensors -o "$W/weights.safetensors"
maelab export "$W/run" --to safetensors --encoder-only -o "$W/encoder.safetensors"
maelab export "$W/hf" --to timm -o "$W/from-hf-timm.safetensors"          # reverse import: HF directory in
maelab export "$W/run" --to timm --img-size 48 -o "$W/enc48-timm.safetensors"   # position embedding resampled
maelab reconstruct "$W/hf" --num-images 4 --dataset synthetic -o "$W/recon-from-hf.png"
"${PYTHON:-python}" - "$W" <<'PY'
import sys, timm, torch
from maelab.interop import load_source
w = sys.argv[1]
vit = timm.create_model("vit_base_patch16_224.mae", pretrained=True,
                        pretrained_cfg_overlay=dict(file=f"{w}/enc-timm.safetensors"),
                        img_size=32, patch_size=8, in_chans=1, embed_dim=32, depth=2, num_heads=2, num_classes=0).eval()
model = load_source(f"{w}/run").build()
x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    print("timm vs maelab max |diff|:", float((vit.forward_features(x) - model.forward_encoder(x, None)).abs().max()))
PY
ls "$W"
