"""Shared fixtures for the data tests: tiny fake datasets written to tmp dirs."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from maelab.data import fashion_mnist
from maelab.data.idx import write_idx


def _fake_fashion(root: Path, n_train: int = 24, n_test: int = 8, gz: bool = True) -> Path:
    """Write fake Fashion-MNIST IDX files into ``root``; labels are ``i % 10``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8))
    return root


def _fake_cifar(root: Path, per_batch: int = 6) -> Path:
    """Write fake CIFAR-10 python batches (protocol 4, like a modern re-pickle)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        batch = {
            "batch_label": f"fake {name}",
            "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(per_batch)],
        }
        (root / name).write_bytes(pickle.dumps(batch, protocol=4))
    return root


@pytest.fixture
def fake_fashion() -> Callable[..., Path]:
    return _fake_fashion


@pytest.fixture
def fake_cifar() -> Callable[..., Path]:
    return _fake_cifar


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide the Debian files and the user's download cache from the search."""
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (tmp_path / "no-debian",))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path
