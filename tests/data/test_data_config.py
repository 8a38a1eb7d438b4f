"""DataConfig validation, dataset_info resolution and the build_dataset entry point."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import maelab.data as data_pkg
from maelab.data import DataConfig, DatasetInfo, build_dataset, dataset_info, pretrain_transform


def test_defaults_match_the_interface() -> None:
    cfg = DataConfig()
    assert (cfg.dataset, cfg.data, cfg.download, cfg.img_size, cfg.channels) == (
        "fashion_mnist", None, True, None, None,
    )  # fmt: skip
    assert (cfg.synthetic_size, cfg.num_workers) == (512, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.img_size = 3  # type: ignore[misc]


def test_string_path_is_coerced() -> None:
    assert DataConfig(data="some/dir").data == Path("some/dir")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"dataset": "imagenet"}, "choose one of"),
        ({"img_size": 0}, "--img-size"),
        ({"img_size": 2.5}, "--img-size"),
        ({"channels": 0}, "pass 1"),
        ({"channels": True}, "pass 1"),
        ({"synthetic_size": 0}, "--synthetic-size"),
        ({"num_workers": -1}, "pass 0"),
    ],
)
def test_bad_config_values(kwargs: dict, fix: str) -> None:
    with pytest.raises(ValueError, match=fix):
        DataConfig(**kwargs)


def test_unsupported_channels_for_real_datasets() -> None:
    with pytest.raises(ValueError, match="use 1 .* or 3"):
        dataset_info(DataConfig(channels=2))
    assert dataset_info(DataConfig(dataset="synthetic", channels=2)).channels == 2


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10", "synthetic"])
def test_info_is_consistent(dataset: str) -> None:
    info = dataset_info(DataConfig(dataset=dataset, img_size=24))  # type: ignore[arg-type]
    assert isinstance(info, DatasetInfo) and info.name == dataset
    assert info.img_size == (24, 24)
    assert len(info.mean) == len(info.std) == info.channels
    assert len(info.class_names) == info.num_classes > 0


def test_bad_split() -> None:
    with pytest.raises(ValueError, match="'train' or 'test'"):
        build_dataset(DataConfig(dataset="synthetic"), "val", None)  # type: ignore[arg-type]


def test_dataloader_batches_with_workers() -> None:
    cfg = DataConfig(dataset="synthetic", synthetic_size=16, channels=3, img_size=16, num_workers=1)
    ds = build_dataset(cfg, "train", pretrain_transform(dataset_info(cfg)))
    loader = DataLoader(ds, batch_size=8, num_workers=cfg.num_workers)
    images, labels = next(iter(loader))
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.int64


def test_public_names() -> None:
    for name in ("DataConfig", "DatasetInfo", "dataset_info", "build_dataset", "pretrain_transform", "eval_transform"):
        assert name in data_pkg.__all__ and hasattr(data_pkg, name)


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    # A fresh interpreter with HOME redirected: importing must create no files or dirs.
    home = tmp_path / "home"
    home.mkdir()
    code = "import logging, maelab.data, maelab.data.builders; assert not logging.getLogger().handlers"
    env = {"HOME": str(home), "PYTHONPATH": str(Path(data_pkg.__file__).parents[2])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=60)
    assert list(home.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["home"]
