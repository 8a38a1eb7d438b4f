"""CIFAR-10: fake batches, layout search, and refusal of malicious pickles."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from maelab.data import DataConfig, DatasetNotFoundError, build_dataset, dataset_info
from maelab.data.cifar import UnsafePickleError, load_split, read_batch, restricted_loads


class _Exploit:
    """Pickles to a call of os.system; loading it unrestricted would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("nested", [False, True])
def test_reads_fake_batches(isolated: Path, fake_cifar: Callable[..., Path], nested: bool) -> None:
    root = isolated / "c"
    fake_cifar(root / "cifar-10-batches-py" if nested else root, per_batch=6)
    cfg = DataConfig(dataset="cifar10", data=root, download=False)
    train = build_dataset(cfg, "train", None)
    test = build_dataset(cfg, "test", None)
    assert (len(train), len(test)) == (30, 6)
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8
    image, label = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10


def test_channel_planar_rows_become_chw(tmp_path: Path) -> None:
    data = np.zeros((1, 3072), np.uint8)
    data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 10, 20, 30  # R, G, B planes
    (tmp_path / "b").write_bytes(pickle.dumps({"data": data, "labels": [4]}, protocol=4))
    images, labels = read_batch(tmp_path / "b")
    assert images.shape == (1, 3, 32, 32)
    assert [int(images[0, c, 5, 7]) for c in range(3)] == [10, 20, 30]
    assert labels.tolist() == [4]


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` (BINSTRING), the encoding of the official batches."""

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]
    dispatch[bytes] = save_bytes


def test_python2_pickles_like_the_official_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    for name in (f"data_batch_{i}" for i in range(1, 6)):
        with (tmp_path / name).open("wb") as f:
            _Py2Pickler(f, protocol=2).dump({b"data": data, b"labels": [1, 2, 3, 4], b"batch_label": b"x"})
    assert b"_codecs" not in (tmp_path / "data_batch_1").read_bytes()
    images, labels = load_split(tmp_path, "train")
    assert images.shape == (20, 3, 32, 32) and labels.tolist() == [1, 2, 3, 4] * 5
    assert torch.equal(images[:4].reshape(4, -1), torch.from_numpy(data))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"data": _Exploit(marker), "labels": [0]})
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        restricted_loads(blob)
    assert not marker.exists()


def test_malicious_batch_file_fails_the_build(isolated: Path, fake_cifar: Callable[..., Path]) -> None:
    root = fake_cifar(isolated / "c")
    marker = isolated / "pwned"
    (root / "test_batch").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(pickle.UnpicklingError):
        build_dataset(DataConfig(dataset="cifar10", data=root, download=False), "test", None)
    assert not marker.exists()


def test_other_globals_refused() -> None:
    with pytest.raises(UnsafePickleError):
        restricted_loads(pickle.dumps(Path("/etc/passwd")))


def test_wrong_content_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]}, protocol=4))
    with pytest.raises(ValueError, match="re-download"):
        read_batch(tmp_path / "b")


def test_missing_lists_fixes(isolated: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset(DataConfig(dataset="cifar10", data=isolated / "none", download=False), "train", None)
    message = str(info.value)
    assert "--data DIR" in message and "cifar-10-python.tar.gz" in message
    assert "--download" in message and "download=" not in message  # the real flag, not a Python argument


def test_info() -> None:
    info = dataset_info(DataConfig(dataset="cifar10"))
    assert (info.channels, info.img_size, info.num_classes) == (3, (32, 32), 10)
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2470, 0.2435, 0.2616)
    gray = dataset_info(DataConfig(dataset="cifar10", channels=1))
    assert len(gray.mean) == 1 and 0.45 < gray.mean[0] < 0.5
