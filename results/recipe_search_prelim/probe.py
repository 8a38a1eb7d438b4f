"""Frozen-feature evaluation of a maelab pre-training run on Fashion-MNIST.

Features come from the encoder seeing ALL patches (no mask): the token sequence after each
block; the final LayerNorm (``norm``) is applied to every block's output (as the final output is).
Feature kinds:
  cls          cls token of the final normed output            (D)
  mean         mean of the final normed patch tokens           (D)
  clsmean      concat of both                                   (2D)
  lastK_cls / lastK_mean / lastK_clsmean  concat over the last K blocks (K=2..4)

Protocol: validation = a fixed seeded 10% (6,000 images, numpy RandomState(0) permutation) of
the 60k training images; the probe trains on the other 54,000. Standardized features,
scikit-learn LogisticRegression (lbfgs), C picked on validation from a grid. kNN k=20 cosine on
L2-normalized features, weighted (exp(sim/0.07), as maelab knn) and plain majority vote.
With --test: the chosen C (per kind, chosen on val) is refit on all 60k train images and
scored on the 10k test split; kNN uses all 60k as the bank.

usage: probe.py RUN_DIR OUT_JSON [--kinds cls,mean,...] [--grid 0.01,0.1,1] [--test]
       probe.py pixels OUT_JSON          raw-pixel reference on the same split
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from maelab.data import DataConfig, build_dataset, dataset_info, eval_transform
from maelab.engine.classify import load_pretrained
from maelab.models import build_model

N_TRAIN, N_VAL = 60000, 6000
ALL_KINDS = ["cls", "mean", "clsmean"] + [f"last{k}_{p}" for k in (2, 3, 4) for p in ("cls", "mean", "clsmean")]


def val_split() -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.RandomState(0).permutation(N_TRAIN)
    return np.sort(perm[N_VAL:]), np.sort(perm[:N_VAL])


def load_images(split: str, img_size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = DataConfig(dataset="fashion_mnist", img_size=img_size, channels=1)
    ds = build_dataset(cfg, split, eval_transform(dataset_info(cfg)))
    loader = torch.utils.data.DataLoader(ds, batch_size=1000, shuffle=False)
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return torch.cat(xs), torch.cat(ys).long()


@torch.no_grad()
def block_features(mae, imgs: torch.Tensor, last: int = 4, batch: int = 500) -> dict[str, torch.Tensor]:
    """{'b{j}_cls','b{j}_mean'} for the last ``last`` blocks (j = 1 is the final block), normed."""
    out: dict[str, list] = {}
    depth = len(mae.blocks)
    last = min(last, depth)
    for s in range(0, imgs.shape[0], batch):
        x = mae.embed_tokens(imgs[s:s + batch], None)  # (B, 1+L, D), all patches
        for i, blk in enumerate(mae.blocks):
            x = blk(x)
            j = depth - i  # 1 = final block
            if j <= last:
                h = mae.norm(x)
                out.setdefault(f"b{j}_cls", []).append(h[:, 0].clone())  # clone: a view would keep all of h alive
                out.setdefault(f"b{j}_mean", []).append(h[:, 1:].mean(1))
    return {k: torch.cat(v).float() for k, v in out.items()}


def assemble(blocks: dict[str, torch.Tensor], kind: str) -> np.ndarray | None:
    if kind.startswith("last"):
        k, pool = int(kind[4:kind.index("_")]), kind[kind.index("_") + 1:]
    else:
        k, pool = 1, kind
    if f"b{k}_cls" not in blocks:
        return None
    pools = ["cls", "mean"] if pool == "clsmean" else [pool]
    parts = [blocks[f"b{j}_{p}"] for j in range(1, k + 1) for p in pools]
    return torch.cat(parts, 1).numpy()


def knn(train_x, train_y, test_x, test_y, k=20, t=0.07) -> tuple[float, float]:
    bank = F.normalize(torch.from_numpy(train_x).float(), dim=1)
    ty = torch.from_numpy(train_y).long()
    correct_w = correct_p = 0
    for s in range(0, test_x.shape[0], 1000):
        q = F.normalize(torch.from_numpy(test_x[s:s + 1000]).float(), dim=1)
        sims, idx = (q @ bank.T).topk(k, dim=1)
        lab = ty[idx]
        w = torch.zeros(q.shape[0], 10).scatter_add_(1, lab, (sims / t).exp())
        p = torch.zeros(q.shape[0], 10).scatter_add_(1, lab, torch.ones_like(sims))
        yy = torch.from_numpy(test_y[s:s + 1000]).long()
        correct_w += (w.argmax(1) == yy).sum().item()
        correct_p += (p.argmax(1) == yy).sum().item()
    return correct_w / len(test_y), correct_p / len(test_y)


def logreg_grid(xtr, ytr, xev, yev, grid, max_iter=3000):
    """Accuracy per C (ascending, warm-started), plus iterations and convergence flags."""
    sc = StandardScaler().fit(xtr)
    xtr, xev = sc.transform(xtr), sc.transform(xev)
    clf = LogisticRegression(solver="lbfgs", max_iter=max_iter, tol=1e-4, warm_start=True)
    res = {}
    for c in sorted(grid):
        clf.set_params(C=c)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always", ConvergenceWarning)
            t0 = time.time()
            clf.fit(xtr, ytr)
        conv = not any(issubclass(x.category, ConvergenceWarning) for x in w)
        res[c] = dict(acc=float((clf.predict(xev) == yev).mean()), n_iter=int(clf.n_iter_[0]), converged=conv,
                      fit_s=round(time.time() - t0, 1))
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("out")
    ap.add_argument("--kinds", default=",".join(ALL_KINDS))
    ap.add_argument("--grid", default="0.01,0.1,1,10")
    ap.add_argument("--test", action="store_true")
    ap.add_argument("--test-kinds", default=None, help="kinds to test (default: the 2 best on val, plus cls for reference)")
    ap.add_argument("--test-only", default=None,
                    help="KIND=C,...: skip validation; refit on all 60k with these val-chosen C and score the test split")
    a = ap.parse_args()
    torch.set_num_threads(2)
    t_start = time.time()
    grid = [float(g) for g in a.grid.split(",")]
    tr_idx, va_idx = val_split()
    x_all, y_all = load_images("train")
    y_all = y_all.numpy()
    result: dict = dict(run=a.run, grid=grid, n_probe_train=len(tr_idx), n_val=len(va_idx), val="RandomState(0) perm[:6000]")
    if a.run == "pixels":
        feats = {"pixels": x_all.flatten(1).numpy()}
        mae = None
    else:
        pre = load_pretrained(Path(a.run), "probe")
        mae = build_model(pre.config)
        r = mae.load_state_dict(pre.encoder, strict=False)
        assert not [k for k in r.missing_keys if not k.startswith(("decoder", "mask_token", "target_"))], r
        mae.eval()
        result["model_config"] = {k: v for k, v in vars(pre.config).items() if not k.startswith("_")} if hasattr(pre.config, "__dict__") else str(pre.config)
        t0 = time.time()
        blocks = block_features(mae, x_all)
        result["feature_s_train"] = round(time.time() - t0, 1)
        feats = {k: assemble(blocks, k) for k in a.kinds.split(",")}
        feats = {k: v for k, v in feats.items() if v is not None}
    val = {}
    if a.test_only:
        chosen = dict(kv.split("=") for kv in a.test_only.split(","))
        feats = {k: v for k, v in feats.items() if k in chosen}
        for k in chosen:
            val[k] = dict(best_C=float(chosen[k]), best_acc=float("nan"), note="C chosen on validation in an earlier run")
    for kind, f in (feats.items() if not a.test_only else []):
        lr = logreg_grid(f[tr_idx], y_all[tr_idx], f[va_idx], y_all[va_idx], grid)
        best_c = max(lr, key=lambda c: (lr[c]["acc"], -c))
        kw, kp = knn(f[tr_idx], y_all[tr_idx], f[va_idx], y_all[va_idx])
        val[kind] = dict(dim=int(f.shape[1]), logreg=lr, best_C=best_c, best_acc=lr[best_c]["acc"], knn_w=kw, knn_plain=kp)
        print(f"{kind:16s} dim {f.shape[1]:5d}  val logreg {lr[best_c]['acc']:.4f} (C={best_c}, "
              f"conv={lr[best_c]['converged']}, it={lr[best_c]['n_iter']})  knn_w {kw:.4f}  knn {kp:.4f}", flush=True)
    result["val"] = val
    if a.test:
        x_te, y_te = load_images("test")
        y_te = y_te.numpy()
        if mae is None:
            tfeats = {"pixels": x_te.flatten(1).numpy()}
        else:
            tb = block_features(mae, x_te)
            tfeats = {k: assemble(tb, k) for k in feats}
        ranked = sorted(val, key=lambda k: -val[k]["best_acc"])
        kinds = a.test_kinds.split(",") if a.test_kinds else list(dict.fromkeys(ranked[:2] + (["cls"] if "cls" in val else [])))
        test = {}
        for kind in kinds:
            c = val[kind]["best_C"]
            lr = logreg_grid(feats[kind], y_all, tfeats[kind], y_te, [c])
            kw, kp = knn(feats[kind], y_all, tfeats[kind], y_te)
            test[kind] = dict(C=c, logreg=lr[c]["acc"], converged=lr[c]["converged"], n_iter=lr[c]["n_iter"],
                              knn_w=kw, knn_plain=kp)
            print(f"TEST {kind:16s} logreg {lr[c]['acc']:.4f} (C={c}, conv={lr[c]['converged']})  knn_w {kw:.4f}  knn {kp:.4f}",
                  flush=True)
        result["test"] = test
    result["eval_s"] = round(time.time() - t_start, 1)
    Path(a.out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
