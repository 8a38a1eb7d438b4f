"""Cache frozen features (train / val / test) of a checkpoint for cheap probe and kNN experiments.

    python results/knn_whitening/feats.py CHECKPOINT|pixels POOL LAYERS OUT.pt [DATASET]
"""

import sys
from pathlib import Path

import torch

from maelab.evaluate.config import EvalDataOptions
from maelab.evaluate.features import extract_features, frozen_features
from maelab.evaluate.linprobe import probe_images

ckpt, pool, layers, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
dataset = sys.argv[5] if len(sys.argv) > 5 else None
torch.set_num_threads(2)
init = "pixels" if ckpt == "pixels" else "pretrained"
opts = EvalDataOptions(dataset=dataset) if dataset else EvalDataOptions()
fr = frozen_features(init, None if init == "pixels" else Path(ckpt), "mae_vit_fashion_patch7", opts, pool,
                     "bn_linear", 0, torch.device("cpu"), "linprobe", layers)
tr, splits = probe_images(fr, opts, False)
feats = {n: extract_features(fr.encode, d, 512, torch.device("cpu"), n, 0) for n, d in {"train": tr, **splits}.items()}
torch.save(feats, out)
print({k: tuple(v[0].shape) for k, v in feats.items()})
