"""Choose the kNN score's options of the one-class benchmark on the training split only, never on the test split.

    python results/anomaly_oneclass/choose_knn.py runs/anomaly_oneclass/budget-3m [--runs DIR]

For every class K with a pre-training run (``class-K/pretrain`` under the budget directory, or under ``--runs``
when the checkpoints live elsewhere), a validation set is drawn from Fashion-MNIST's *training* split: a fixed,
seeded 600 images of each class (the same 6,000 for every K). Class K's 600 are the normal validation images and
are left out of the kNN bank (the other 5,400 images of class K); the other nine classes' 5,400 are the anomalous
ones. Every option of the grid below is scored by its validation AUROC, and the one with the best mean over the
ten classes (one setting for all classes, as a user would fix a default) is written to ``selection.json``, with
the whole grid in ``selection.csv`` and a summary in ``selection.md``. ``run.sh`` then scores the test split once
with it (``ANOMALY_ARGS``).

The validation uses labels of the training split to know which images are anomalous, the way the rest of maelab
chooses on a held-out part of the training data. It is slightly optimistic for the normal images: the encoder
was pre-trained on all 6,000 images of class K, the 600 validation ones included (the kNN bank leaves them out).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from maelab.anomaly.command import embedding_fn
from maelab.anomaly.config import AnomalyConfig
from maelab.anomaly.data import scored_images
from maelab.anomaly.metrics import auroc
from maelab.anomaly.scoring import nearest_distances, whitened
from maelab.data import build_dataset, eval_transform
from maelab.evaluate.features import extract_features
from maelab.visualize.reconstruct import load_mae

PER_CLASS = 600  # validation images drawn from each class's 6,000 training images
SEED = 0
POOLS = ("token", "avg")
LAYERS = (1, 2, 4, 6)  # the last k blocks of the 6-block encoder, concatenated
WHITEN = (None, 32, 64, 128, 256, 512)  # principal components kept (None: not whitened)
DISTANCES = ("cosine", "euclidean")
KS = (1, 5, 20, 50)
MIRROR = (False, True)  # the embedding alone, or averaged with its mirror image's (--mirror)
DEFAULT = dict(pool="token", layers=1, whiten=None, distance="cosine", k=5, mirror=False)  # maelab anomaly's


def validation_indices(targets: torch.Tensor, classes: int) -> dict[int, torch.Tensor]:
    """Per class, the seeded ``PER_CLASS`` training indices held out for validation."""
    g = torch.Generator().manual_seed(SEED)
    out = {}
    for c in range(classes):
        members = (targets == c).nonzero().flatten()  # (6000,)
        out[c] = members[torch.randperm(len(members), generator=g)[:PER_CLASS]].sort().values
    return out


@torch.no_grad()
def grid_for_class(run: Path, normal: int, batch_size: int) -> list[dict]:
    """Validation AUROC of every option of the grid for the run pre-trained on class ``normal``."""
    model, info, extra = load_mae(run, "cpu")
    model.requires_grad_(False)
    data = scored_images(AnomalyConfig(run=run), dict(extra.get("data") or {}), model.config).data
    train = build_dataset(data, "train", eval_transform(info))
    targets = torch.as_tensor(train.targets)  # (60000,)
    held = validation_indices(targets, int(targets.max()) + 1)
    val = torch.cat([held[c] for c in sorted(held)])  # (6000,) normal and anomalous
    anomalous = (targets[val] != normal).numpy()  # (6000,)
    members = (targets == normal).nonzero().flatten()
    bank = members[~torch.isin(members, held[normal])]  # (5400,) class K minus its validation images
    rows = []
    for pool, mirror in itertools.product(POOLS, MIRROR):
        encode = embedding_fn(model, data, pool, len(model.blocks), torch.device("cpu"), run, mirror)
        bank_feats, _ = extract_features(encode, Subset(train, bank.tolist()), batch_size, torch.device("cpu"))
        val_feats, _ = extract_features(encode, Subset(train, val.tolist()), batch_size, torch.device("cpu"))
        dim = bank_feats.shape[1] // len(model.blocks)
        for layers, whiten in itertools.product(LAYERS, WHITEN):
            if whiten is not None and whiten > layers * dim:
                continue
            last = slice(bank_feats.shape[1] - layers * dim, None)  # the last `layers` blocks' outputs
            space = whitened(bank_feats[:, last], val_feats[:, last], whiten)  # as maelab anomaly --whiten
            for distance in DISTANCES:
                nearest = nearest_distances(*space, max(KS), distance)  # (6000, max k), nearest first
                for k in KS:  # knn_score's mean over the k nearest
                    scores = nearest[:, :k].mean(1)  # (6000,)
                    rows.append(dict(normal=normal, pool=pool, layers=layers, whiten=whiten, distance=distance, k=k,
                                     mirror=mirror, auroc=100 * auroc(scores.numpy(), anomalous)))
    return rows


def key(row: dict) -> tuple:
    return tuple(row[name] for name in DEFAULT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("budget_dir", type=Path, help="where selection.* are written (e.g. budget-3m)")
    parser.add_argument("--runs", type=Path, help="directory holding class-K/pretrain (default: budget_dir)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    runs = args.runs or args.budget_dir
    rows = []
    for normal in range(10):
        run = runs / f"class-{normal}" / "pretrain"
        if not (run / "checkpoint-last.safetensors").is_file():
            sys.exit(f"{run} has no finished pre-training run (checkpoint-last.safetensors); run run.sh first")
        rows += grid_for_class(run, normal, args.batch_size)
        print(f"class {normal}: {len(rows)} validation scores so far", flush=True)
    by_option: dict[tuple, list[float]] = {}
    for row in rows:
        by_option.setdefault(key(row), []).append(row["auroc"])
    means = sorted(((float(np.mean(v)), option) for option, v in by_option.items() if len(v) == 10), reverse=True)
    best = dict(zip(DEFAULT, means[0][1]))
    default_mean = float(np.mean(by_option[key(DEFAULT)]))
    out = args.budget_dir
    out.mkdir(parents=True, exist_ok=True)
    with (out / "selection.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0]])
        writer.writeheader()
        writer.writerows(dict(r, auroc=f"{r['auroc']:.3f}") for r in rows)
    per_class = {str(r["normal"]): r["auroc"] for r in rows if key(r) == key(best)}
    args_line = (f"--pool {best['pool']} --layers {best['layers']} --k {best['k']} --distance {best['distance']}"
                 + (f" --whiten {best['whiten']}" if best["whiten"] is not None else "")
                 + (" --mirror" if best["mirror"] else ""))
    (out / "selection.json").write_text(json.dumps(dict(
        chosen=best, anomaly_args=args_line, val_mean_auroc=means[0][0], val_auroc_per_class=per_class,
        default=DEFAULT, default_val_mean_auroc=default_mean, options=len(means), per_class_images=PER_CLASS,
        seed=SEED), indent=2) + "\n")
    lines = ["# kNN score options chosen on the training split (choose_knn.py)", "",
             f"Validation: {PER_CLASS} seeded training images of each class; class K's are normal (left out of "
             "the bank), the other nine classes' are anomalous. Mean validation AUROC over the ten classes, "
             f"{len(means)} options; chosen: `{args_line}`.", "",
             "| rank | pool | layers | whiten | distance | k | mirror | mean val AUROC |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rank, (mean, option) in enumerate(means[:15], 1):
        lines.append(f"| {rank} | " + " | ".join(str(v) for v in option) + f" | {mean:.2f} |")
    lines += ["", f"maelab anomaly's defaults ({' '.join(f'{k}={v}' for k, v in DEFAULT.items())}): "
              f"{default_mean:.2f} mean validation AUROC.", ""]
    (out / "selection.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
