"""The solved probe reaches scikit-learn's optimum; the validation split is fixed, disjoint and chooses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from maelab.cli import main
from maelab.evaluate.config import EvalDataOptions
from maelab.evaluate.data import val_indices
from maelab.evaluate.logistic import C_GRID, Standardizer, accuracy, fit_logistic, load_into_head, solve_probe
from maelab.models.classifier import PROBE_BN_EPS, bn_linear_head

# The cls token of the last block: the features' default before the validated one (avg over all blocks),
# which this file's assertions were written for.
CLS = ["--pool", "token", "--layers", "1"]


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images): train 900 / val 300 / test 597."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = torch.tensor(x[order]).float(), torch.tensor(y[order])
    return (x[:900], y[:900]), (x[900:1200], y[900:1200]), (x[1200:], y[1200:])


def test_default_probe_matches_scikit_learn_on_real_features(digits):
    """C chosen on the same validation split from the same grid; test accuracy within 0.3 points."""
    train, val, test = digits
    solution = solve_probe(train, val, 10, PROBE_BN_EPS)
    ours = accuracy(solution.fit, solution.standardizer(test[0]), test[1])
    scaler = StandardScaler().fit(train[0].numpy())

    def sklearn_fit(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=10_000).fit(scaler.transform(train[0].numpy()), train[1].numpy())

    tried = C_GRID[:len(solution.search)]  # the same early stop: scikit-learn's choice among the same values
    best = max(tried, key=lambda c: sklearn_fit(c).score(scaler.transform(val[0].numpy()), val[1].numpy()))
    theirs = 100 * sklearn_fit(best).score(scaler.transform(test[0].numpy()), test[1].numpy())
    assert solution.c == best
    assert abs(ours - theirs) <= 0.3, (ours, theirs)
    # The search runs up the grid until validation accuracy first falls below the best (here past the best C).
    tried = [row["c"] for row in solution.search]
    assert tried == list(C_GRID[:len(tried)]) and all("val_top1" in r for r in solution.search)
    scores = [row["val_top1"] for row in solution.search]
    assert scores[-1] < max(scores) or len(tried) == len(C_GRID)


def test_lbfgs_reaches_the_objective_minimum(digits):
    """The same objective value as scikit-learn's solution, which minimizes C * sum(CE) + ||W||^2 / 2."""
    (x, y), _, _ = digits
    z = Standardizer.fit(x.double(), PROBE_BN_EPS)(x.double())
    c = 1.0
    ours = fit_logistic(z, y, 10, c, tolerance=1e-10)
    ref = LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit(z.numpy(), y.numpy())

    def objective(weight: torch.Tensor, bias: torch.Tensor) -> float:
        ce = torch.nn.functional.cross_entropy(z @ weight.T + bias, y)
        return float(ce + weight.pow(2).sum() / (2 * c * len(z)))

    assert objective(ours.weight, ours.bias) == pytest.approx(
        objective(torch.tensor(ref.coef_), torch.tensor(ref.intercept_)), rel=1e-7)
    assert ours.converged
    # An iteration limit that cuts the solve short is reported, not passed off as the optimum.
    assert not fit_logistic(z, y, 10, c, max_iter=3, tolerance=1e-10).converged


def test_solution_loads_into_the_probe_head(digits):
    """BatchNorm(affine=False) in eval mode with the training statistics is the standardization."""
    train, val, test = digits
    solution = solve_probe(train, val, 10, PROBE_BN_EPS, c=0.1)
    head = bn_linear_head(64, 10).eval()
    load_into_head(solution, head)
    expected = solution.fit.logits(solution.standardizer(test[0]))
    assert torch.allclose(head(test[0]), expected, atol=1e-4)


def test_constant_training_features_are_not_blown_up():
    feats = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    z = Standardizer.fit(feats, PROBE_BN_EPS)(torch.tensor([[2.0, 2.0]]))
    assert torch.allclose(z, torch.tensor([[2.0, 0.0]]), atol=1e-5)


def test_validation_split_is_fixed_disjoint_and_sized():
    opts = EvalDataOptions(val_fraction=0.1)
    train, val = val_indices(1000, opts)
    assert len(val) == 100 and len(train) == 900 and not set(train) & set(val)
    assert (train, val) == val_indices(1000, opts)  # the same images on every call
    assert len(val_indices(1000, EvalDataOptions(val_size=7))[1]) == 7
    assert val_indices(1000, EvalDataOptions(val_fraction=0.0))[1] == []
    with pytest.raises(ValueError, match="--val-size"):
        val_indices(10, EvalDataOptions(val_size=10))


def test_linprobe_and_knn_report_val_and_test_and_choose_on_val(pretrained_run, tmp_path):
    probe, knn = tmp_path / "lp", tmp_path / "knn"
    assert main(["linprobe", *CLS, "--checkpoint", str(pretrained_run), "--output-dir", str(probe)]) == 0
    metrics = json.loads((probe / "metrics.json").read_text())
    assert metrics["selected_on"] == "val" and metrics["optimizer"] == "lbfgs"
    assert metrics["c"] == max(metrics["c_search"], key=lambda r: r["val_top1"])["c"]
    assert {"val_top1", "top1"} <= metrics["best"].keys()
    assert metrics["val_images"] == 13 and metrics["train_images"] == 115  # 10% of 128 synthetic images held out
    assert (probe / "checkpoint-last.safetensors").is_file() and (probe / "checkpoint-best.safetensors").is_file()
    assert main(["knn", *CLS, "--checkpoint", str(pretrained_run), "--output-dir", str(knn)]) == 0
    record = json.loads((knn / "knn.json").read_text())
    assert record["val_images"] == 13 and record["train_images"] == 115 and "val_top1" in record


def test_last_blocks_probe_concatenates_normed_block_outputs(pretrained_run, tmp_path):
    """--layers 2: features are [norm(block -2) cls, norm(block -1) cls]; the last part is the usual feature."""
    from maelab.evaluate.features import vit_features
    from maelab.evaluate.source import load_encoder, load_pretrained
    from maelab.models.classifier import build_vit

    pre = load_pretrained(pretrained_run, "test")
    cfg = dict(img_size=[32, 32], patch_size=8, in_chans=1, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
               global_pool="token", fc_norm=False, num_classes=0, head="none")
    one, two = build_vit(cfg).eval(), build_vit({**cfg, "layers": 2}).eval()
    load_encoder(one, pre)
    load_encoder(two, pre)
    imgs = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats, last = two.features(imgs), vit_features(one)(imgs)
        tokens = torch.cat([one.cls_token.expand(3, -1, -1), one.patch_embed(imgs)], dim=1) + one.pos_embed
        first = one.norm(one.blocks[0](tokens))[:, 0]  # (3, 32): block 1's cls token through the final norm
    assert feats.shape == (3, 64)
    assert torch.allclose(feats[:, 32:], last, atol=1e-6) and torch.allclose(feats[:, :32], first, atol=1e-6)
    out = tmp_path / "lp"
    assert main(["linprobe", "--pool", "token", "--checkpoint", str(pretrained_run), "--layers", "2",
                 "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["feature_dim"] == 64 and metrics["layers"] == 2
    assert main(["export", str(out), "--to", "timm"]) == 2  # a timm ViT cannot express it: refused, not wrong
