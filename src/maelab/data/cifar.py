"""CIFAR-10 from the official "python version" batches, read without trusting pickle.

The batches are pickles, and ``pickle.load`` on a file from the internet can
run arbitrary code. :class:`RestrictedUnpickler` only resolves the handful of
numpy globals an array needs, so a tampered file fails instead of executing.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maelab.data.config import DataConfig, DatasetNotFoundError, default_cache_dir

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
STD: tuple[float, ...] = (0.2470, 0.2435, 0.2616)
NATIVE_SIZE = 32
NATIVE_CHANNELS = 3

BATCH_DIR = "cifar-10-batches-py"
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_MD5 = "c58f30108f718f92721af3b95e74349a"

# (module, name) pairs an ndarray pickle needs; numpy 2 renamed numpy.core to numpy._core.
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves numpy array reconstruction globals."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: CIFAR batches only contain dicts, "
                "lists, bytes and numpy arrays; the file is corrupt or has been tampered with, "
                "delete it and re-download"
            )
        if module == "numpy.core.multiarray":
            # Resolve through numpy._core directly: touching numpy.core warns on numpy >= 2.
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def restricted_loads(blob: bytes) -> Any:
    """Unpickle ``blob`` with :class:`RestrictedUnpickler` (latin1 for Python 2 pickles)."""
    return RestrictedUnpickler(io.BytesIO(blob), encoding="latin1").load()


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file.

    Returns:
        images uint8 (N, 3, 32, 32) and labels int64 (N,).
    """
    content = restricted_loads(path.read_bytes())
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a dict in a CIFAR batch, got {type(content).__name__}; re-download it")
    content = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}
    data, labels = content.get("data"), content.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise ValueError(f"{path}: missing 'data' array or 'labels'; is this a CIFAR-10 python batch?")
    labels = np.asarray(labels, dtype=np.int64)
    pixels = 3 * NATIVE_SIZE * NATIVE_SIZE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels or data.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{path}: expected uint8 data (N, {pixels}) and N labels, got {data.dtype} {data.shape} "
            f"and {labels.shape[0]} labels; re-download the batch"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ValueError(f"{path}: labels outside 0..9; is this CIFAR-100? only CIFAR-10 is supported")
    # Rows are stored channel-planar (1024 R, 1024 G, 1024 B), i.e. already CHW.
    return data.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE), labels


def load_split(directory: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the batches of ``split`` found in ``directory``.

    Returns:
        images uint8 (N, 3, 32, 32) and labels int64 (N,).
    """
    parts = [read_batch(directory / name) for name in SPLIT_FILES[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def find_batch_dir(directory: Path, split: str) -> Path | None:
    """``directory`` or ``directory/cifar-10-batches-py`` when it holds all batches of ``split``."""
    for folder in (directory, directory / BATCH_DIR):
        if all((folder / name).is_file() for name in SPLIT_FILES[split]):
            return folder
    return None


def locate(cfg: DataConfig, split: str) -> Path:
    """Directory holding the batches of ``split``: ``cfg.data``, the cache, else a download.

    Raises:
        DatasetNotFoundError: nothing found and download disabled or failed.
    """
    searched: list[Path] = []
    for directory in _search_dirs(cfg):
        searched.append(directory)
        found = find_batch_dir(directory, split)
        if found is not None:
            logger.info("CIFAR-10 %s split: %s", split, found)
            return found
    if not cfg.download:
        raise _not_found(split, searched, "download is disabled")
    # Download the archive ourselves: torchvision.datasets.CIFAR10 would pickle.load it unrestricted.
    from torchvision.datasets.utils import download_and_extract_archive

    root = default_cache_dir()
    logger.info("downloading CIFAR-10 into %s", root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(_URL, str(root), md5=_MD5)
    except Exception as exc:  # noqa: BLE001 - any network/IO failure has the same fix
        raise _not_found(split, searched, f"the download failed ({exc})") from exc
    found = find_batch_dir(root, split)
    if found is None:
        raise _not_found(split, searched, f"the download left no batches in {root / BATCH_DIR}")
    return found


def _search_dirs(cfg: DataConfig) -> Iterator[Path]:
    if cfg.data is not None:
        yield cfg.data
    yield default_cache_dir()


def _not_found(split: str, searched: list[Path], reason: str) -> DatasetNotFoundError:
    names = ", ".join(SPLIT_FILES[split])
    where = ", ".join(str(p) for p in searched)
    return DatasetNotFoundError(
        f"CIFAR-10 {split} split not found (searched: {where}) and {reason}. Fix it with one of:\n"
        f"  1. pass --data DIR where DIR (or DIR/{BATCH_DIR}) holds the python batches ({names});\n"
        f"  2. download and extract {_URL} into DIR yourself;\n"
        "  3. run with --download (the default; not --no-download) on a machine with internet; it goes to "
        f"{default_cache_dir()}."
    )
