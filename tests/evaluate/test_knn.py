"""Weighted kNN: the pure function, ``maelab knn`` end to end and ``pretrain --knn-every``."""

from __future__ import annotations

import json

import torch

from maelab.cli import main
from maelab.data import DataConfig, dataset_info
from maelab.evaluate.config import EvalDataOptions
from maelab.evaluate.data import val_indices
from maelab.evaluate.knn import KnnMonitor, knn_evaluate, knn_scores, pca_whitener

# The cls token of the last block: the features' default before the validated one (avg over all blocks),
# which this file's assertions were written for.
CLS = ["--pool", "token", "--layers", "1"]


def test_knn_separates_gaussian_clusters_perfectly():
    g = torch.Generator().manual_seed(0)
    classes, dim = 6, 16
    centres = 10 * torch.randn(classes, dim, generator=g)  # (C, D) far apart
    train_labels = torch.arange(classes).repeat(30)  # (180,)
    test_labels = torch.arange(classes).repeat(10)  # (60,)
    train = centres[train_labels] + 0.1 * torch.randn(180, dim, generator=g)
    test = centres[test_labels] + 0.1 * torch.randn(60, dim, generator=g)
    result = knn_evaluate((train, train_labels), (test, test_labels), classes)
    assert result.top1 == 100.0 and result.top5 == 100.0
    assert torch.equal(result.confusion, torch.diag(torch.full((classes,), 10)))


def test_knn_scores_match_the_formula():
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(7, 5, generator=g), torch.randn(3, 5, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    k, t = 3, 0.5
    sims = torch.nn.functional.normalize(test, dim=1) @ torch.nn.functional.normalize(train, dim=1).T  # (3, 7)
    expected = torch.zeros(3, 3)
    for i in range(3):
        for j in sims[i].argsort(descending=True)[:k]:
            expected[i, labels[j]] += torch.exp(sims[i, j] / t)
    torch.testing.assert_close(knn_scores(train, labels, test, 3, k=k, temperature=t), expected)
    # k larger than the bank: every train image votes.
    assert knn_scores(train, labels, test, 3, k=100).shape == (3, 3)


def test_knn_command(pretrained_run, tmp_path):
    out = tmp_path / "knn"
    assert main(["knn", *CLS, "--checkpoint", str(pretrained_run), "--k", "5", "--output-dir", str(out)]) == 0
    report = json.loads((out / "knn.json").read_text())
    assert report["k"] == 5 and 0 <= report["top1"] <= 100 and report["test_images"] == 32
    assert sum(map(sum, report["confusion_matrix"])) == 32
    assert (out / "confusion.png").stat().st_size > 1000
    assert json.loads((out / "log.jsonl").read_text())["event"] == "knn"
    # Another resolution: the sin-cos position table is recomputed for a 6x6 grid.
    assert main(["knn", "--checkpoint", str(pretrained_run), "--img-size", "48", "--pool", "avg",
                 "--output-dir", str(tmp_path / "knn48")]) == 0


def test_pretrain_knn_every_logs_knn_accuracy(tmp_path):
    run = tmp_path / "pre"
    assert main(["pretrain", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64",
                 "--batch-size", "32", "--epochs", "2", "--knn-every", "1", "--output-dir", str(run)]) == 0
    epochs = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "epoch"]
    assert len(epochs) == 2 and all(0 <= r["knn_top1"] <= r["knn_top5"] <= 100 for r in epochs)
    assert main(["pretrain", "--knn-every", "-1", "--output-dir", str(tmp_path / "bad")]) == 2


def test_pca_whitener_matches_scikit_learn_and_whitens_the_bank():
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(2)
    train = torch.randn(300, 12, generator=g) @ torch.randn(12, 12, generator=g) + 3  # correlated, off-centre
    test = torch.randn(40, 12, generator=g) @ torch.randn(12, 12, generator=g)
    whiten = pca_whitener(train, 5)
    z = whiten(train)  # (300, 5)
    torch.testing.assert_close(z.T @ z / 299, torch.eye(5), atol=1e-4, rtol=0)
    reference = PCA(5, whiten=True, svd_solver="full").fit(train.double().numpy())
    theirs = torch.from_numpy(reference.transform(test.double().numpy())).float()
    ours = whiten(test)
    signs = (ours * theirs).sum(0).sign()  # a principal direction is defined up to its sign
    torch.testing.assert_close(ours * signs, theirs, atol=1e-4, rtol=1e-4)


def test_whitening_stops_a_loud_nuisance_direction_from_deciding_the_neighbours():
    """Two classes apart along a quiet direction, beside loud class-free directions: cosine kNN on the raw features
    follows the loud ones (near chance), on whitened features the class one."""
    g = torch.Generator().manual_seed(3)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(2).repeat(n // 2)  # (n,)
        x = torch.randn(n, 6, generator=g) * 0.1  # (n, 6)
        x[:, 2:] += 100 * torch.randn(n, 4, generator=g)  # loud, no class information
        x[:, 1] += labels.float() * 2 - 1  # quiet, the class
        return x, labels

    train, test = sample(400), sample(200)
    raw = knn_evaluate(train, test, 2).top1
    whiten = pca_whitener(train[0], 6)
    white = knn_evaluate((whiten(train[0]), train[1]), (whiten(test[0]), test[1]), 2).top1
    assert raw < 70 and white > 95, (raw, white)


def test_knn_command_whitens_and_refuses_too_many_components(pretrained_run, tmp_path):
    out = tmp_path / "knn-white"
    assert main(["knn", *CLS, "--checkpoint", str(pretrained_run), "--whiten", "8", "--output-dir", str(out)]) == 0
    assert json.loads((out / "knn.json").read_text())["whiten"] == 8
    assert main(["knn", *CLS, "--checkpoint", str(pretrained_run), "--whiten", "100000",
                 "--output-dir", str(tmp_path / "too-many")]) == 2
    assert not (tmp_path / "too-many").exists()


def test_knn_monitor_queries_the_validation_split_held_out_of_the_training_images():
    """pretrain --knn-every looks at held-out training images (as the evaluation commands' --val-fraction),
    never at the test split."""
    data = DataConfig(dataset="synthetic", synthetic_size=128, img_size=16, channels=3)
    monitor = KnnMonitor(data, dataset_info(data), torch.device("cpu"), 32)
    bank, held = val_indices(128, EvalDataOptions())
    assert monitor.split == "validation" and len(held) == 13
    assert sorted(monitor.queries.indices) == held and sorted(monitor.train.indices) == bank
    assert set(monitor.queries.indices).isdisjoint(monitor.train.indices)
