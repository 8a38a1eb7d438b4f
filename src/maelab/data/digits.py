"""Handwritten digits (UCI's optical recognition set as bundled with scikit-learn): 1,797 real 8x8 images.

A second small real image set that installs offline with one well-kept package, so a recipe tuned on
Fashion-MNIST can be checked on other images without a download. The set has no official test split;
maelab fixes one: a seeded permutation by image index gives 1,297 training and 500 test images, the
same on every machine. The 17 grey levels (0..16) are scaled to 0..255.

The file is scikit-learn's ``datasets/data/digits.csv.gz`` (64 pixel columns then the label, one row per
image); ``--data FILE`` reads a copy of it instead, so scikit-learn is needed only when no file is given.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from maelab.data.config import DataConfig, DatasetNotFoundError

CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))
NATIVE_SIZE = 8
NATIVE_CHANNELS = 1
GREY_LEVELS = 16
TEST_SIZE = 500
SPLIT_SEED = 0
# Pixel statistics of the training split scaled to [0, 1] (checked by a test).
MEAN: tuple[float, ...] = (0.3051,)
STD: tuple[float, ...] = (0.3756,)


def locate(cfg: DataConfig) -> Path:
    """The CSV file: ``--data`` when given, else the copy inside the installed scikit-learn."""
    if cfg.data is not None:
        if not cfg.data.is_file():
            raise DatasetNotFoundError(f"--data {cfg.data} is not a file; for --dataset digits pass the digits CSV "
                                       "(scikit-learn's datasets/data/digits.csv.gz, gzipped or not)")
        return cfg.data
    try:
        import sklearn.datasets
    except ImportError:
        raise DatasetNotFoundError("--dataset digits reads the copy bundled with scikit-learn, which is not "
                                   "installed; pip install scikit-learn, or pass --data FILE with a copy of "
                                   "its digits.csv.gz") from None
    return Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


def load_split(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split: images uint8 (N, 8, 8) and labels int64 (N,) in [0, 10)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", ndmin=2)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable digits CSV ({exc}); expected rows of 64 pixel values "
                         "(0..16) and a label, as scikit-learn's digits.csv.gz") from None
    if table.shape[1] != NATIVE_SIZE * NATIVE_SIZE + 1:
        raise ValueError(f"{path}: expected 65 columns (64 pixels and a label) per row, got {table.shape[1]}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > GREY_LEVELS or labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{path}: pixel values must lie in 0..{GREY_LEVELS} and labels in 0..9")
    images = np.rint(pixels * (255 / GREY_LEVELS)).astype(np.uint8).reshape(-1, NATIVE_SIZE, NATIVE_SIZE)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    rows = order[-TEST_SIZE:] if split == "test" else order[:-TEST_SIZE]
    rows = rows.sort().values  # keep the file's order inside a split
    return torch.from_numpy(images)[rows], torch.from_numpy(labels.astype(np.int64))[rows]
