"""Configuration and metadata types shared by every dataset backend.

``DataConfig`` is what the user asks for; ``DatasetInfo`` is what the model and
the transforms need to know once the dataset's native properties have been
resolved against that request (see :func:`maelab.data.builders.dataset_info`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

import tyro

from maelab.options import OptionGroup

DatasetName = Literal["fashion_mnist", "folder", "cifar10", "digits", "synthetic", "shards"]
Split = Literal["train", "test"]
Augment = Literal["none", "fixed_crop", "random_resized_crop", "crop_jitter"]

DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)
SPLITS: tuple[str, ...] = get_args(Split)


MAX_BAD_FRACTION_HELP = (
    "Image folders and shards: unreadable image files (empty, truncated, not an image) are skipped and "
    "reported; stop with an error once more than this fraction of a split is unreadable (0 stops at the "
    "first, 1 never stops)."
)


@dataclass(frozen=True, kw_only=True)
class BadFileOptions(OptionGroup):
    """How many unreadable image files a command tolerates: the one definition of ``--max-bad-fraction``.

    Every command that reads images takes these options by inheriting them (pretrain through
    :class:`DataConfig`, the evaluation commands through their data options, reconstruct, demo and
    bench directly), so the flag has the same name, default, help and check everywhere; the errors
    about bad files (:class:`maelab.data.folder.BadMarks`) name only this flag. Keyword-only, so a
    subclass keeps its own positional fields.
    """

    max_bad_fraction: Annotated[float, tyro.conf.arg(help=MAX_BAD_FRACTION_HELP)] = 0.05

    def __post_init__(self) -> None:
        value = self.max_bad_fraction
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(
                f"--max-bad-fraction must be in [0, 1] (0 stops at the first unreadable image, 1 never stops); "
                f"got {value!r}"
            )
        super().__post_init__()


@dataclass(frozen=True)
class DataConfig(BadFileOptions):
    """What data to load and at which resolution.

    Attributes:
        dataset: which backend to use.
        data: directory holding the data; ``None`` lets the backend search its
            default locations (required for ``"folder"`` and for ``"shards"``, the
            directory ``maelab shard`` wrote).
        download: allow a torchvision download when nothing is found locally.
        img_size: side of the square image fed to the model; ``None`` keeps
            the dataset's native size (28 Fashion-MNIST, 32 CIFAR-10 and
            synthetic, 8 digits, 224 folder and shards).
        channels: channels fed to the model; ``None`` keeps the native count
            (1 Fashion-MNIST, digits and synthetic, 3 CIFAR-10, folder and shards).
        synthetic_size: number of synthetic train images (test: a quarter).
        num_workers: DataLoader worker processes.
        augment: pre-training augmentation (paper Table 1e): "none" (center crop only),
            "fixed_crop" (fixed-size random crop + flip), "random_resized_crop" (the paper's
            default) or "crop_jitter" (random-size crop + flip + color jitter).

    ``max_bad_fraction`` comes from :class:`BadFileOptions`.
    """

    dataset: DatasetName = "fashion_mnist"
    data: Path | None = None
    download: bool = True
    img_size: int | None = None
    channels: int | None = None
    synthetic_size: int = 512
    num_workers: int = 0
    augment: Augment = "random_resized_crop"
    classes: tuple[int, ...] | None = None
    """Keep only the images of these labels, in every split, e.g. --classes 3 or --classes 0 3 (label indices:
    0-9 for fashion_mnist and cifar10, a folder's class sub-folders in name order). Labeled data only."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.classes is not None:
            # config.json and sweep files give lists; a tuple compares equal to the command line's on --resume.
            object.__setattr__(self, "classes", tuple(self.classes))
            if not self.classes or not all(_is_int(c) and c >= 0 for c in self.classes):
                raise ValueError(f"--classes takes one or more label indices (0, 1, ...); got {self.classes!r}")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"--classes names a label twice: {' '.join(map(str, self.classes))}")
        if self.dataset not in DATASET_NAMES:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASET_NAMES)}"
            )
        if self.data is not None and not isinstance(self.data, Path):
            # Callers (CLI, YAML) often hand over strings; normalising here keeps
            # every backend free of str/Path special cases.
            object.__setattr__(self, "data", Path(self.data))
        if self.img_size is not None and (not _is_int(self.img_size) or self.img_size < 1):
            raise ValueError(
                f"img_size must be a positive integer, got {self.img_size!r}; "
                "pass e.g. --img-size 32, or leave it unset for the native size"
            )
        if self.channels is not None and (not _is_int(self.channels) or self.channels < 1):
            raise ValueError(
                f"channels must be a positive integer, got {self.channels!r}; "
                "pass 1 (grayscale) or 3 (RGB), or leave it unset for the native count"
            )
        if not _is_int(self.synthetic_size) or self.synthetic_size < 1:
            raise ValueError(
                f"synthetic_size must be a positive integer, got {self.synthetic_size!r}; "
                "pass e.g. --synthetic-size 512"
            )
        if self.augment not in get_args(Augment):
            raise ValueError(
                f"unknown augment {self.augment!r}; choose one of {', '.join(get_args(Augment))}"
            )
        if not _is_int(self.num_workers) or self.num_workers < 0:
            raise ValueError(
                f"num_workers must be >= 0, got {self.num_workers!r}; "
                "pass 0 to load in the main process"
            )


@dataclass(frozen=True)
class DatasetInfo:
    """Resolved properties of a dataset as seen by the model.

    Attributes:
        name: dataset name (``DataConfig.dataset``).
        channels: C of the (C, H, W) tensors the transforms produce.
        img_size: (H, W) of the tensors the transforms produce.
        mean, std: per-channel normalization statistics, ``len == channels``.
        num_classes: number of labels; 0 when the data is unlabeled.
        class_names: ``num_classes`` names, index = label.
    """

    name: str
    channels: int
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        assert len(self.mean) == self.channels == len(self.std), (self.mean, self.std, self.channels)
        assert len(self.class_names) == self.num_classes, (self.class_names, self.num_classes)
        assert all(s > 0 for s in self.std), self.std


class DatasetNotFoundError(FileNotFoundError):
    """No local copy of a dataset was found and downloading was not possible."""


def default_cache_dir() -> Path:
    """Where torchvision downloads go (``~/.cache/maelab/data``); computed lazily."""
    return Path.home() / ".cache" / "maelab" / "data"


def check_split(split: str) -> None:
    """Reject anything but ``"train"``/``"test"`` with an actionable message."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")


def _is_int(value: object) -> bool:
    # bool is an int subclass, but channels=True is certainly a mistake.
    return isinstance(value, int) and not isinstance(value, bool)
