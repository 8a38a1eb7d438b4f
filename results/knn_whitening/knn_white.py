"""Whitened kNN (maelab.evaluate.knn.pca_whitener, k=20, T=0.07) on cached features: val / test top-1 per component
count, printed as CSV rows `features,whitenN,val_top1,test_top1` (lab.csv).

    python results/knn_whitening/knn_white.py FEATURES.pt 32,64,128,256,384,512,768
"""

import sys
from pathlib import Path

import torch

from maelab.evaluate.knn import knn_evaluate, pca_whitener

torch.set_num_threads(2)
feats = torch.load(sys.argv[1])
for n in [int(c) for c in sys.argv[2].split(",")]:
    if n > feats["train"][0].shape[1]:
        continue
    w = pca_whitener(feats["train"][0], n)
    bank = (w(feats["train"][0]), feats["train"][1])
    res = {s: round(knn_evaluate(bank, (w(feats[s][0]), feats[s][1]), 10).top1, 2) for s in ("val", "test")}
    print(f"{Path(sys.argv[1]).stem},whiten{n},{res['val']},{res['test']}", flush=True)
