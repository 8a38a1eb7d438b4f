"""Fashion-MNIST: locate the IDX files and load a split into memory.

Search order for each split: ``cfg.data`` (files directly in it, or
torchvision's ``FashionMNIST/raw`` layout beneath it), the Debian package's
directory, maelab's download cache, and finally a torchvision download when
``cfg.download`` allows it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from maelab.data.config import DataConfig, DatasetNotFoundError, default_cache_dir
from maelab.data.idx import read_idx

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Pixel statistics of the train split scaled to [0, 1] (checked by a test).
MEAN: tuple[float, ...] = (0.2860,)
STD: tuple[float, ...] = (0.3530,)
NATIVE_SIZE = 28
NATIVE_CHANNELS = 1

# Module attribute rather than a literal in the search so tests can point it elsewhere.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

_FILE_STEMS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_split_files(directory: Path, split: str) -> tuple[Path, Path] | None:
    """Return (images, labels) paths for ``split`` in ``directory`` or its
    ``FashionMNIST/raw`` sub-folder; ``None`` when either file is missing."""
    for folder in (directory, directory / "FashionMNIST" / "raw"):
        found = [_existing_variant(folder / stem) for stem in _FILE_STEMS[split]]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    return None


def locate(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    """Find (or download) the IDX files of ``split``; see the module docstring.

    Raises:
        DatasetNotFoundError: nothing found and download disabled or failed;
            the message lists the three ways to fix it.
    """
    searched: list[Path] = []
    for directory in _search_dirs(cfg):
        searched.append(directory)
        files = find_split_files(directory, split)
        if files is not None:
            logger.info("Fashion-MNIST %s split: %s", split, files[0].parent)
            return files
        if directory == cfg.data:
            logger.warning("no Fashion-MNIST %s files in --data %s; searching elsewhere", split, directory)
    if cfg.download:
        return _download(split, searched)
    raise _not_found(split, searched, reason="download is disabled")


def load_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split.

    Returns:
        images uint8 (N, 28, 28) and labels int64 (N,) in [0, 10).
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE) or images.dtype.kind != "u":
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
            f"{images.shape}; check that this is a Fashion-MNIST images file"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path}: expected {images.shape[0]} labels to match {images_path.name}, got shape "
            f"{labels.shape}; make sure images and labels come from the same split"
        )
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise ValueError(
            f"{labels_path}: label {int(labels.max())} is outside 0..9; "
            "check that this is a Fashion-MNIST labels file"
        )
    return torch.from_numpy(images), torch.from_numpy(labels.astype("int64"))


def _search_dirs(cfg: DataConfig) -> Iterator[Path]:
    if cfg.data is not None:
        yield cfg.data
    yield from SYSTEM_DIRS
    yield default_cache_dir()


def _existing_variant(stem_path: Path) -> Path | None:
    # The uncompressed file loads faster, so prefer it when both exist.
    for candidate in (stem_path, stem_path.with_name(stem_path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _download(split: str, searched: list[Path]) -> tuple[Path, Path]:
    # Imported lazily: torchvision.datasets is slow to import and only needed here.
    from torchvision.datasets import FashionMNIST

    root = default_cache_dir()
    logger.info("downloading Fashion-MNIST into %s", root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        FashionMNIST(root=str(root), train=split == "train", download=True)
    except Exception as exc:  # noqa: BLE001 - any network/IO failure has the same fix
        raise _not_found(split, searched, reason=f"the download failed ({exc})") from exc
    files = find_split_files(root, split)
    if files is None:
        raise _not_found(split, searched, reason=f"the download left no IDX files in {root}")
    return files


def _not_found(split: str, searched: list[Path], reason: str) -> DatasetNotFoundError:
    stems = ", ".join(s + "[.gz]" for s in _FILE_STEMS[split])
    where = ", ".join(str(p) for p in searched) or "nowhere"
    return DatasetNotFoundError(
        f"Fashion-MNIST {split} split not found (searched: {where}) and {reason}. Fix it with one of:\n"
        f"  1. pass --data DIR where DIR (or DIR/FashionMNIST/raw) holds the IDX files ({stems});\n"
        "  2. install the Debian package: apt-get install dataset-fashion-mnist;\n"
        "  3. run with --download (the default; not --no-download) on a machine with internet; it goes to "
        f"{default_cache_dir()}."
    )
