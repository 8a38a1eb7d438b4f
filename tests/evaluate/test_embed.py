"""``maelab embed``: rows are the encoder's features of the images the index names, broken files are skipped."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import numpy as np
import pytest
import torch

from maelab.cli import main
from maelab.data import DataConfig, build_dataset, eval_transform
from maelab.data.images import load_image
from maelab.evaluate.embed import read_matrix
from maelab.visualize.reconstruct import load_mae

# The cls token of the last block: the features' default before the validated one (avg over all blocks),
# which this file's assertions were written for.
CLS = ["--pool", "token", "--layers", "1"]


def _index(path):
    return list(csv.DictReader(io.StringIO(path.with_suffix(".csv").read_text())))


def _synthetic_test(model, info):
    data = DataConfig(dataset="synthetic", synthetic_size=128, img_size=32, channels=1)
    dataset = build_dataset(data, "test", eval_transform(info))
    imgs = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return imgs, dataset.labels


@torch.no_grad()
def _last_blocks(model, imgs, layers):
    """The MAE's own encoder (no masking), the outputs of its last ``layers`` blocks through the final norm."""
    x = model.embed_tokens(imgs, None)  # (B, 1 + L, D)
    outs = []
    for block in model.blocks:
        x = block(x)
        outs.append(model.norm(x))
    return outs[-layers:]


def test_rows_are_the_encoders_features_in_index_order(pretrained_run, tmp_path):
    model, info, _ = load_mae(pretrained_run)
    imgs, labels = _synthetic_test(model, info)
    with torch.no_grad():
        tokens = model.forward_encoder(imgs, None)  # (B, 1 + L, D), every patch visible
    cases = {
        "cls.safetensors": (["--pool", "token", "--layers", "1"], tokens[:, 0]),
        "avg.npy": (["--pool", "avg", "--layers", "1"], tokens[:, 1:].mean(1)),
        "last2.safetensors": (["--pool", "token", "--layers", "2"],
                              torch.cat([t[:, 0] for t in _last_blocks(model, imgs, 2)], 1)),
    }
    for name, (flags, expected) in cases.items():
        out = tmp_path / name
        assert main(["embed", str(pretrained_run), "--split", "test", "--batch-size", "7", *flags, "-o", str(out)]) == 0
        torch.testing.assert_close(read_matrix(out), expected, atol=1e-5, rtol=1e-5)
        rows = _index(out)
        assert [int(r["row"]) for r in rows] == [int(r["index"]) for r in rows] == list(range(32))
        assert [int(r["label"]) for r in rows] == labels.tolist() and {r["split"] for r in rows} == {"test"}
        summary = json.loads(out.with_suffix(".json").read_text())
        assert summary["rows"] == 32 and summary["skipped_file_names"] == [] and summary["matrix"] == name
    assert np.load(tmp_path / "avg.npy").dtype == np.float32


def test_all_splits_train_then_test(pretrained_run, tmp_path):
    out = tmp_path / "all.safetensors"
    assert main(["embed", str(pretrained_run), *CLS, "-o", str(out), "--device", "cpu"]) == 0
    rows = _index(out)
    assert [r["split"] for r in rows] == ["train"] * 128 + ["test"] * 32
    assert read_matrix(out).shape == (160, 32)


@pytest.fixture
def broken_folder(photo_folder_with):
    """Six readable PNGs in cats/ and dogs/, an empty file and a text file named .png between them."""
    return photo_folder_with("0b.png")


def test_a_folder_with_broken_files_embeds_the_rest_and_names_the_broken(pretrained_run, broken_folder, tmp_path):
    out = tmp_path / "photos.safetensors"
    assert main(["embed", str(pretrained_run), *CLS, "--dataset", "folder", "--data", str(broken_folder),
                 "--max-bad-fraction", "0.5", "--batch-size", "3", "-o", str(out)]) == 0
    rows = _index(out)
    good = sorted(p for p in broken_folder.rglob("*.png") if p.stat().st_size > 100)
    assert [r["path"] for r in rows] == [str(p) for p in good]
    assert [r["class"] for r in rows] == ["cats"] * 3 + ["dogs"] * 3 and [r["label"] for r in rows] == list("000111")
    summary = json.loads(out.with_suffix(".json").read_text())
    skipped = sorted(str(broken_folder / p) for p in ("cats/1b.png", "dogs/0b.png"))
    assert sorted(summary["skipped_file_names"]) == skipped
    # Each row is its own file's features (not the neighbour the dataset served in a broken file's place).
    model, info, _ = load_mae(pretrained_run)
    # Normalized with the folder's statistics (gray: 0.5, 0.5), as the probe normalizes a folder.
    transform = eval_transform(dataclasses.replace(info, mean=tuple(summary["mean"]), std=tuple(summary["std"])))
    imgs = torch.stack([transform(load_image(p, 1)) for p in good])
    with torch.no_grad():
        expected = model.forward_encoder(imgs, None)[:, 0]
    torch.testing.assert_close(read_matrix(out), expected, atol=1e-5, rtol=1e-5)


def test_too_many_broken_files_exit_2_and_write_nothing(pretrained_run, broken_folder, tmp_path, capsys):
    out = tmp_path / "strict.safetensors"
    assert main(["embed", str(pretrained_run), *CLS, "--dataset", "folder", "--data", str(broken_folder),
                 "-o", str(out)]) == 2
    assert "--max-bad-fraction" in capsys.readouterr().err
    assert not list(tmp_path.glob("strict*"))


def test_bad_options_exit_2(pretrained_run, tmp_path):
    assert main(["embed", str(pretrained_run), "-o", str(tmp_path / "e.csv")]) == 2
    assert main(["embed", str(pretrained_run), "--layers", "9", "-o", str(tmp_path / "e.npy")]) == 2
    assert main(["embed", str(tmp_path / "missing"), "-o", str(tmp_path / "e.npy")]) == 2
