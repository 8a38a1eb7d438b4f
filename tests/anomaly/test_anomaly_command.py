"""``maelab anomaly`` end to end: the one-class protocol on a labeled dataset, and a folder of good and defective
images scored by a run pre-trained on good images only (with a broken file among them)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.metrics import average_precision_score, roc_auc_score

from maelab.anomaly.command import mirror_averaged
from maelab.anomaly.scoring import image_scores, knn_distance, knn_score
from maelab.cli import main
from maelab.data.folder import is_test_file
from maelab.evaluate.embed import read_matrix

# The cls token of the last block: embed's default before the validated features, anomaly's default still.
CLS = ["--pool", "token", "--layers", "1"]


def _rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _check_metrics(out, rows):
    summary = json.loads((out / "anomaly.json").read_text())
    anomalous = [int(r["anomalous"]) for r in rows]
    for name in ("recon", "knn"):
        scores = [float(r[f"{name}_score"]) for r in rows]
        assert summary["metrics"][name]["auroc"] == pytest.approx(roc_auc_score(anomalous, scores), abs=1e-12)
        assert summary["metrics"][name]["auprc"] == pytest.approx(average_precision_score(anomalous, scores), abs=1e-12)
    assert (out / "roc.png").stat().st_size > 1000 and (out / "heatmaps.png").stat().st_size > 1000
    return summary


def test_one_class_protocol_on_a_labeled_dataset(pretrained_run, tmp_path):
    out = tmp_path / "a"
    argv = ["anomaly", str(pretrained_run), "--normal-class", "0", "--num-maps", "5", "--batch-size", "10"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    rows = _rows(out / "scores.csv")
    assert [int(r["index"]) for r in rows] == list(range(32)) and {r["split"] for r in rows} == {"test"}
    assert [r["anomalous"] for r in rows] == [str(int(r["label"] != "0")) for r in rows]
    summary = _check_metrics(out, rows)
    assert summary["normal_class_name"] == "horizontal_stripes" and summary["anomalous_images"] == 24
    assert summary["knn"]["normal_images"] == 32 and summary["mask_ratio"] == 0.75
    assert [r["row"] for r in summary["most_anomalous"]] == sorted(
        (r["row"] for r in summary["most_anomalous"]), key=lambda i: -float(rows[int(i)]["recon_score"]))
    # The image score is the default reduction of the patch errors written beside it.
    errors = load_file(out / "patch_errors.safetensors")["errors"]  # (32, 4, 4)
    assert errors.shape == (32, 4, 4)
    recon = torch.tensor([float(r["recon_score"]) for r in rows])
    torch.testing.assert_close(recon, image_scores(errors.flatten(1), "top", 0.1), atol=1e-6, rtol=1e-6)
    # The kNN score compares maelab embed's features with those of the training split's class-0 images (at
    # anomaly's default features, the cls token of the last block).
    train, test = tmp_path / "train.safetensors", tmp_path / "test.safetensors"
    assert main(["embed", str(pretrained_run), *CLS, "--split", "train", "-o", str(train)]) == 0
    assert main(["embed", str(pretrained_run), *CLS, "--split", "test", "-o", str(test)]) == 0
    normal = torch.tensor([r["label"] == "0" for r in _rows(train.with_suffix(".csv"))])
    expected = knn_distance(read_matrix(train)[normal], read_matrix(test), k=5)
    torch.testing.assert_close(torch.tensor([float(r["knn_score"]) for r in rows]), expected, atol=1e-5, rtol=1e-5)
    # Deterministic: the same masks and the same scores again.
    again = tmp_path / "b"
    assert main([*argv, "--output-dir", str(again)]) == 0
    assert (again / "scores.csv").read_text() == (out / "scores.csv").read_text()
    # --whiten: the same embeddings, whitened on the normal ones; the reconstruction score is untouched.
    white = tmp_path / "w"
    assert main([*argv, "--whiten", "8", "--distance", "euclidean", "--output-dir", str(white)]) == 0
    white_rows = _rows(white / "scores.csv")
    expected = knn_score(read_matrix(train)[normal], read_matrix(test), 5, 8, "euclidean")
    torch.testing.assert_close(torch.tensor([float(r["knn_score"]) for r in white_rows]), expected, atol=1e-5,
                               rtol=1e-5)
    assert [r["recon_score"] for r in white_rows] == [r["recon_score"] for r in rows]
    knn = json.loads((white / "anomaly.json").read_text())["knn"]
    assert (knn["whiten"], knn["distance"]) == (8, "euclidean")
    # --mirror: other kNN scores (mirror images embed differently), the same reconstruction scores.
    mirror = tmp_path / "m"
    assert main([*argv, "--mirror", "--output-dir", str(mirror)]) == 0
    mirror_rows = _rows(mirror / "scores.csv")
    assert [r["recon_score"] for r in mirror_rows] == [r["recon_score"] for r in rows]
    assert [r["knn_score"] for r in mirror_rows] != [r["knn_score"] for r in rows]
    assert json.loads((mirror / "anomaly.json").read_text())["knn"]["mirror"] is True


def test_mirror_averaged_embedding_is_blind_to_left_and_right():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 5, 6))
    imgs = torch.randn(2, 3, 4, 5)
    encode = mirror_averaged(encoder)
    torch.testing.assert_close(encode(imgs), (encoder(imgs) + encoder(imgs.flip(-1))) / 2)
    torch.testing.assert_close(encode(imgs.flip(-1)), encode(imgs))
    assert not torch.allclose(encoder(imgs.flip(-1)), encoder(imgs))  # the plain embedding is not


def _png(path, seed, scratch=False):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32]
    pixels = 100 + 40 * np.sin((x + rng.integers(0, 8)) / 3.0) + rng.normal(0, 4, (32, 32))
    if scratch:
        pixels[8:24, 15:18] = 255
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def inspection(tmp_path_factory):
    """good/ (16 normal images, at least one in the hash test split pre-training looks at) and test/ with good/,
    scratch/ (4 images each) and a broken file; the run of a debug MAE pre-trained on good/ for one epoch."""
    root = tmp_path_factory.mktemp("inspection")
    (root / "good").mkdir()
    names = [f"{i:03d}.png" for i in range(16)]
    assert any(is_test_file(Path(n)) for n in names)
    for i, name in enumerate(names):
        _png(root / "good" / name, i)
    for kind in ("good", "scratch"):
        (root / "test" / kind).mkdir(parents=True)
        for i in range(4):
            _png(root / "test" / kind / f"{i}.png", 100 + i, scratch=kind == "scratch")
    (root / "test" / "scratch" / "broken.png").write_bytes(b"\x89PNG\r\n")
    run = root / "run"
    assert main(["pretrain", "--model", "debug", "--dataset", "folder", "--data", str(root / "good"), "--img-size",
                 "32", "--batch-size", "4", "--epochs", "1", "--vis-every", "100", "--no-tensorboard",
                 "--output-dir", str(run)]) == 0
    return root, run


def test_good_and_defective_folders(inspection, tmp_path, capsys):
    root, run = inspection
    out = tmp_path / "test"
    # One broken file of nine is more than the default --max-bad-fraction: refused, nothing written.
    assert main(["anomaly", str(run), "--data", str(root / "test"), "--output-dir", str(out)]) == 2
    assert "--max-bad-fraction" in capsys.readouterr().err and not out.exists()
    assert main(["anomaly", str(run), "--data", str(root / "test"), "--max-bad-fraction", "0.2",
                 "--output-dir", str(out)]) == 0
    rows = _rows(out / "scores.csv")
    files = sorted(str(p) for p in (root / "test").rglob("*.png") if p.name != "broken.png")
    assert [r["path"] for r in rows] == files
    assert [r["anomalous"] for r in rows] == ["0"] * 4 + ["1"] * 4
    summary = _check_metrics(out, rows)
    assert summary["normal_class_name"] == "good" and summary["knn"]["normal_images"] == 16
    assert summary["skipped_file_names"] == [str(root / "test" / "scratch" / "broken.png")]
    assert load_file(out / "patch_errors.safetensors")["errors"].shape == (8, 4, 4)


def test_unlabeled_images_are_scored_without_metrics(inspection, tmp_path, caplog):
    root, run = inspection
    out = tmp_path / "self"
    # Its own training images: no labels, so no AUROC; each is its own nearest normal neighbour (kNN score 0).
    assert main(["anomaly", str(run), "--k", "1", "--num-maps", "0", "--output-dir", str(out)]) == 0
    rows = _rows(out / "scores.csv")
    assert len(rows) == 16 and {r["anomalous"] for r in rows} == {""}
    assert all(abs(float(r["knn_score"])) < 1e-5 for r in rows)
    summary = json.loads((out / "anomaly.json").read_text())
    assert summary["metrics"] is None and not (out / "roc.png").exists() and not (out / "heatmaps.png").exists()
    assert any("include the images scored" in r.message for r in caplog.records)


def test_refusals_exit_2(pretrained_run, inspection, tmp_path):
    base = ["anomaly", str(pretrained_run), "--output-dir", str(tmp_path / "x")]
    assert main([*base, "--normal-class", "4"]) == 2  # synthetic has 4 classes
    assert main([*base, "--masks", "1"]) == 2
    assert main([*base, "--masks", "17"]) == 2  # 16 patches
    assert main([*base, "--top-fraction", "0"]) == 2
    assert main([*base, "--whiten", "0"]) == 2
    assert main([*base, "--normal-class", "0", "--whiten", "32"]) == 2  # 8 normal images: at most 7 components
    assert main(["anomaly", str(inspection[1]), "--data", str(inspection[0] / "good"), "--normal-class", "0",
                 "--output-dir", str(tmp_path / "y")]) == 2  # unlabeled folder: no class 0
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
