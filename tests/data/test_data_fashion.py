"""Fashion-MNIST: file search order, layouts, errors, and the real Debian files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from maelab.data import DataConfig, DatasetNotFoundError, build_dataset, dataset_info, fashion_mnist
from maelab.data.idx import write_idx

REAL_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

HAVE_REAL = all(
    (REAL_FASHION_DIR / f"{p}-{k}-ubyte.gz").is_file()
    for p in ("train", "t10k")
    for k in ("images-idx3", "labels-idx1")
)


@pytest.mark.parametrize("gz", [True, False])
def test_flat_layout(isolated: Path, fake_fashion: Callable[..., Path], gz: bool) -> None:
    root = fake_fashion(isolated / "fm", n_train=24, n_test=8, gz=gz)
    cfg = DataConfig(data=root, download=False)
    train = build_dataset(cfg, "train", transform=None)
    test = build_dataset(cfg, "test", transform=None)
    assert (len(train), len(test)) == (24, 8)
    image, label = train[13]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert label == 3
    assert train.labels.tolist() == [i % 10 for i in range(24)]


def test_torchvision_layout(isolated: Path, fake_fashion: Callable[..., Path]) -> None:
    fake_fashion(isolated / "tv" / "FashionMNIST" / "raw", n_train=12, n_test=4)
    ds = build_dataset(DataConfig(data=isolated / "tv", download=False), "test", transform=None)
    assert len(ds) == 4


def test_data_dir_takes_precedence_over_system_dirs(
    isolated: Path, fake_fashion: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    system = fake_fashion(isolated / "system", n_train=30, n_test=10)
    mine = fake_fashion(isolated / "mine", n_train=20, n_test=5)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (system,))
    assert len(build_dataset(DataConfig(data=mine, download=False), "train", None)) == 20
    # Without --data, and with --data lacking the files, the system directory is used.
    assert len(build_dataset(DataConfig(download=False), "train", None)) == 30
    assert len(build_dataset(DataConfig(data=isolated / "empty", download=False), "train", None)) == 30


def test_missing_data_lists_all_three_fixes(isolated: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset(DataConfig(data=isolated / "nothing", download=False), "train", None)
    message = str(info.value)
    assert "--data DIR" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--download" in message and "download=" not in message and "internet" in message
    assert isinstance(info.value, FileNotFoundError)


def test_mismatched_labels_are_rejected(isolated: Path, fake_fashion: Callable[..., Path]) -> None:
    root = fake_fashion(isolated / "fm")
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="same split"):
        build_dataset(DataConfig(data=root, download=False), "train", None)


def test_info_defaults_and_resizing() -> None:
    info = dataset_info(DataConfig())
    assert (info.channels, info.img_size, info.num_classes) == (1, (28, 28), 10)
    assert info.class_names[0] == "T-shirt/top" and info.class_names[-1] == "Ankle boot"
    rgb = dataset_info(DataConfig(img_size=32, channels=3))
    assert rgb.img_size == (32, 32) and rgb.mean == (0.2860,) * 3 and len(rgb.std) == 3


def test_resized_rgb_items(isolated: Path, fake_fashion: Callable[..., Path]) -> None:
    root = fake_fashion(isolated / "fm")
    ds = build_dataset(DataConfig(data=root, download=False, img_size=32, channels=3), "train", None)
    image, _ = ds[0]
    assert image.shape == (3, 32, 32)
    assert torch.equal(image[0], image[2])  # gray repeated, not colourised


@pytest.mark.skipif(not HAVE_REAL, reason="Debian package dataset-fashion-mnist is not installed")
def test_real_debian_files() -> None:
    cfg = DataConfig(download=False)
    train = build_dataset(cfg, "train", None)
    test = build_dataset(cfg, "test", None)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    for ds, n in ((train, 6000), (test, 1000)):
        assert ds.labels.min() == 0 and ds.labels.max() == 9
        assert torch.bincount(ds.labels).tolist() == [n] * 10
    pixels = train.images.to(torch.float64) / 255.0
    assert round(pixels.mean().item(), 3) == fashion_mnist.MEAN[0]
    assert round(pixels.std().item(), 3) == fashion_mnist.STD[0]
