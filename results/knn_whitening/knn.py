"""kNN (k=20, T=0.07, cosine) on cached features with preprocessing variants; prints CSV rows
`features,transform,val_top1,test_top1` (lab.csv).

    python results/knn_whitening/knn.py FEATURES.pt    # FEATURES.pt from feats.py
"""

import sys
from pathlib import Path

import torch

from maelab.evaluate.knn import knn_scores

torch.set_num_threads(2)
feats = torch.load(sys.argv[1])
Xtr, ytr = feats["train"]
Xtr = Xtr.float()
mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6


def pca_white(X, n):
    U, S, V = torch.pca_lowrank(Xtr - mu, q=n, center=False)
    return lambda Z: ((Z - mu) @ V) / (S / (Xtr.shape[0] - 1) ** 0.5)


variants = {"raw": lambda Z: Z, "center": lambda Z: Z - mu, "standardize": lambda Z: (Z - mu) / sd}
for n in (64, 256):
    if n < Xtr.shape[1]:
        variants[f"pca{n}-white"] = pca_white(Xtr, n)
for name, f in variants.items():
    bank = f(Xtr)
    res = {}
    for s in ("val", "test"):
        X, y = feats[s]
        correct = knn_scores(bank, ytr, f(X.float()), int(ytr.max()) + 1).argmax(1) == y
        res[s] = round(correct.float().mean().item() * 100, 2)
    print(f"{Path(sys.argv[1]).stem},{name},{res['val']},{res['test']}", flush=True)
