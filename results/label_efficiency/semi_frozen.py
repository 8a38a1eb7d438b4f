"""Frozen-feature routes that use the unlabeled images, with K labels per class (a side exploration of
results/label_efficiency, not a maelab command): the logistic probe on features standardized, or PCA-whitened
to 64 components, with statistics of the 54,000 unlabeled training images (C chosen on the K-per-class
validation draw), and label spreading over the unlabeled images' 10-nearest-neighbour graph (scikit-learn,
whitened features). The label draws are maelab's (--labels-per-class K --label-seed S).

    python semi_frozen.py FEATURES.npy LABELS.npy NAME OUT.json

FEATURES: (70000, D) rows in Fashion-MNIST's order, train then test (`maelab embed RUN -o FEATURES.npy` or raw
pixels); LABELS: (70000,) in the same order. Prints one JSON line per (K, seed): route -> [val, C, test].
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelSpreading

from maelab.data.labels import balanced_draw

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def pca_whitener(pool: np.ndarray, components: int):
    mean = pool.mean(0)
    centered = pool - mean
    values, vectors = np.linalg.eigh((centered.T @ centered / len(pool)).astype(np.float64))
    values, vectors = values[::-1][:components], vectors[:, ::-1][:, :components]
    return lambda a: ((a - mean) @ vectors / np.sqrt(values)).astype(np.float32)


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def probe(transform, train, val, test) -> list:
    """The logistic probe at the C chosen on ``val``: [val %, C, test %]."""
    best = None
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=2000).fit(transform(train[0]), train[1])
        score = clf.score(transform(val[0]), val[1])
        if best is None or score > best[0]:
            best = (score, c, clf)
    return [round(100 * best[0], 2), best[1], round(100 * best[2].score(transform(test[0]), test[1]), 2)]


def main(features: str, labels_path: str, name: str, out_path: str) -> None:
    x, y = np.load(features).astype(np.float32), np.load(labels_path).astype(np.int64)
    order = torch.randperm(60000, generator=torch.Generator().manual_seed(1)).tolist()  # maelab's validation split
    held, keep = sorted(order[:6000]), sorted(order[6000:])
    pool, pool_y, val_x, val_y = x[keep], y[keep], x[held], y[held]
    test = (x[60000:], y[60000:])
    mean, std = pool.mean(0), pool.std(0) + 1e-6
    whiten = pca_whitener(pool, 64)
    out = []
    for k in (10, 100):
        for seed in (0, 1, 2):
            labeled = balanced_draw(torch.from_numpy(pool_y), k, seed)
            checked = balanced_draw(torch.from_numpy(val_y), k, seed + 1000, cap=True)
            train, val = (pool[labeled], pool_y[labeled]), (val_x[checked], val_y[checked])
            row = {"standardized": probe(lambda a: (a - mean) / std, train, val, test),
                   "pca64": probe(whiten, train, val, test)}
            seeds = -np.ones(len(pool), dtype=np.int64)
            seeds[labeled] = train[1]
            spread = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.2, max_iter=50).fit(unit(whiten(pool)), seeds)
            row["spread_pca64"] = [round(100 * spread.score(unit(whiten(val[0])), val[1]), 2), None,
                                   round(100 * spread.score(unit(whiten(test[0])), test[1]), 2)]
            print(name, k, seed, json.dumps(row), flush=True)
            out.append(dict(k=k, seed=seed, **row))
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
