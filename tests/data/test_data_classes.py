"""``--classes``: only the images of some labels, for labeled datasets; clear errors otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.checkpoint import read_meta
from maelab.cli import main
from maelab.data import DataConfig, build_dataset
from maelab.train.config import from_jsonable, to_jsonable


def test_classes_are_checked_and_kept_as_a_tuple() -> None:
    assert DataConfig(classes=[3, 0]).classes == (3, 0)  # type: ignore[arg-type]
    assert from_jsonable(DataConfig, to_jsonable(DataConfig(classes=(3,)))) == DataConfig(classes=(3,))
    for bad, message in (((), "one or more"), ((-1,), "one or more"), ((1, 1), "twice"), ((True,), "one or more")):
        with pytest.raises(ValueError, match=message):
            DataConfig(classes=bad)


def test_fashion_mnist_keeps_the_named_labels_in_order(fake_fashion, tmp_path) -> None:
    root = fake_fashion(tmp_path / "fm", n_train=24, n_test=8)  # labels i % 10
    full = build_dataset(DataConfig(data=root, download=False), "train", None)
    one = build_dataset(DataConfig(data=root, download=False, classes=(3,)), "train", None)
    assert one.targets == [3, 3, 3] and one.class_names == full.class_names
    assert torch.equal(one[1][0], full[13][0])  # the same images, in the dataset's order
    two = build_dataset(DataConfig(data=root, download=False, classes=(3, 0)), "test", None)
    assert two.targets == [0, 3]


def test_unknown_label_names_the_classes(fake_fashion, tmp_path) -> None:
    root = fake_fashion(tmp_path / "fm")
    with pytest.raises(ValueError, match=r"--classes 10: not a label of fashion_mnist, whose 10 classes are 0 T-shirt"):
        build_dataset(DataConfig(data=root, download=False, classes=(3, 10)), "train", None)


def test_label_without_images_in_a_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="test split of synthetic has no image of these classes"):
        build_dataset(DataConfig(dataset="synthetic", synthetic_size=8, classes=(3,)), "test", None)  # 2 test images


def _folder(root: Path, classes: tuple[str, ...], per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    return root


def test_folder_classes_are_sub_folders_in_name_order(tmp_path) -> None:
    root = _folder(tmp_path / "images", ("bird", "cat", "dog"))
    data = build_dataset(DataConfig(dataset="folder", data=root, img_size=16, classes=(2,)), "train", None)
    assert data.targets == [2, 2, 2] and all(data.path(i).parent.name == "dog" for i in range(3))
    with pytest.raises(ValueError, match="classes are 0 bird, 1 cat, 2 dog"):
        build_dataset(DataConfig(dataset="folder", data=root, img_size=16, classes=(5,)), "train", None)


def test_unlabeled_folder_is_refused(tmp_path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(20):
        Image.new("L", (12, 12), i).save(root / f"{i}.png")
    with pytest.raises(ValueError, match="--classes needs labeled images"):
        build_dataset(DataConfig(dataset="folder", data=root, img_size=16, classes=(0,)), "train", None)


SMALL = ["pretrain", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "8",
         "--epochs", "1", "--vis-every", "100", "--no-tensorboard"]


def test_pretrain_on_one_class_records_it(tmp_path) -> None:
    run = tmp_path / "run"
    assert main([*SMALL, "--classes", "2", "--output-dir", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["data"]["classes"] == [2]
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in steps) == 2  # 16 of the 64 images are class 2: two batches of 8
    assert read_meta(run).extra["data"]["classes"] == [2]  # what maelab anomaly reads back
    assert main(["pretrain", "--resume", str(run), "--epochs", "1"]) == 2  # finished; but the config reloads


def test_pretrain_with_an_unknown_class_exits_2_before_writing(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main([*SMALL, "--classes", "7", "--output-dir", str(run)]) == 2
    assert "--classes 7: not a label of synthetic" in capsys.readouterr().err
    assert not run.exists()
