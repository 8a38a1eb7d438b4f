"""A directory of image files as a dataset, tolerant of a few broken files.

Layout rules:

* every image file below ``DIR`` (recursively, hidden entries ignored) is used;
* if every image sits inside a first-level sub-folder, those folder names
  (sorted) are the classes; otherwise the data is unlabeled (label -1);
* ``DIR/train`` + ``DIR/test`` (or ``DIR/val``) are used as the splits when
  both exist; otherwise a hash of each file's relative path puts ~10% of the
  files into the test split, identically on every run and machine;
* ``DIR/maelab_stats.json`` (``{"mean": [...], "std": [...]}``) overrides the
  default normalization statistics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from maelab.data.images import DECODE_ERRORS, IMAGE_EXTENSIONS, is_image_file, load_image

logger = logging.getLogger(__name__)

NATIVE_SIZE = 224
NATIVE_CHANNELS = 3
IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)
GRAY_MEAN: tuple[float, ...] = (0.5,)
GRAY_STD: tuple[float, ...] = (0.5,)
STATS_FILE = "maelab_stats.json"
TEST_PERCENT = 10
WARN_LIMIT = 5  # bad files named individually in the log before going quiet
NAMED_LIMIT = 100  # bad files named in a result file (metrics.json, knn.json)


@dataclass(frozen=True)
class FolderIndex:
    """Image files of one split with their labels (-1 = unlabeled)."""

    files: tuple[Path, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...]


def check_root(data: Path | None) -> Path:
    """Validate ``cfg.data`` for the folder dataset and return it."""
    if data is None:
        raise ValueError("dataset 'folder' needs a directory of images; pass --data DIR")
    if not data.is_dir():
        what = "does not exist" if not data.exists() else "is not a directory"
        raise ValueError(f"--data {data} {what}; pass a directory containing image files")
    return data


def split_dirs(root: Path) -> tuple[Path, Path] | None:
    """(train dir, test dir) when ``root`` has explicit splits, else ``None``."""
    train = root / "train"
    if not train.is_dir():
        return None
    for name in ("test", "val"):
        if (root / name).is_dir():
            return train, root / name
    return None


def scan_images(root: Path) -> list[Path]:
    """All image files below ``root``, sorted, as paths relative to ``root``."""
    found: list[Path] = []
    seen_dirs: set[str] = set()
    # followlinks so symlinked class folders work; seen_dirs guards against link cycles.
    for current, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(current)
        if real in seen_dirs:
            dirnames.clear()
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(current).relative_to(root)
        found.extend(rel_dir / f for f in filenames if not f.startswith(".") and is_image_file(Path(f)))
    return sorted(found, key=lambda p: p.as_posix())


def class_names_of(relative: Sequence[Path]) -> tuple[str, ...]:
    """Sorted first-level folder names when every file sits in one, else ``()``."""
    if not relative or any(len(p.parts) < 2 for p in relative):
        return ()
    return tuple(sorted({p.parts[0] for p in relative}))


def is_test_file(relative: Path) -> bool:
    """Deterministic ~10% test membership from the relative path (platform independent)."""
    digest = hashlib.blake2b(relative.as_posix().encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100 < TEST_PERCENT


def index_split(root: Path, split: str) -> FolderIndex:
    """Files, labels and class names of ``split`` under the folder dataset ``root``."""
    dirs = split_dirs(root)
    if dirs is not None:
        train_dir, test_dir = dirs
        train_files = _nonempty_scan(train_dir)
        classes = class_names_of(train_files)
        split_dir = train_dir if split == "train" else test_dir
        files = train_files if split == "train" else _nonempty_scan(test_dir)
    else:
        split_dir = root
        all_files = _nonempty_scan(root)
        classes = class_names_of(all_files)
        files = [p for p in all_files if is_test_file(p) == (split == "test")]
        if not files:
            raise ValueError(
                f"the hash-based {split} split of {root} is empty ({len(all_files)} images in total); "
                f"add more images, or create {root}/train and {root}/test yourself"
            )
    return FolderIndex(
        files=tuple(split_dir / p for p in files),
        labels=tuple(_labels(files, classes, split_dir)),
        class_names=classes,
    )


def folder_class_names(root: Path) -> tuple[str, ...]:
    """Class names of the dataset at ``root`` (from the train split when split dirs exist)."""
    dirs = split_dirs(root)
    return class_names_of(_nonempty_scan(dirs[0] if dirs else root))


def folder_stats(root: Path, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) from ``root/maelab_stats.json`` if present, else ImageNet / (0.5, 0.5)."""
    path = root / STATS_FILE
    if not path.is_file():
        return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)
    try:
        content = json.loads(path.read_text())
        mean = tuple(float(v) for v in content["mean"])
        std = tuple(float(v) for v in content["std"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f'{path}: cannot read normalization stats ({exc!r}); write {{"mean": [...], "std": [...]}} '
            "with one number per channel, or delete the file to use the defaults"
        ) from exc
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ValueError(
            f"{path}: needs {channels} mean and {channels} positive std values, got mean={mean} std={std}; "
            "fix the file or change --channels"
        )
    return mean, std


class BadMarks:
    """Which of ``count`` samples turned out undecodable, seen by every process reading them.

    The marks live in shared memory, so what DataLoader workers find is counted in the main
    process. :meth:`mark` logs a sample (the first ``WARN_LIMIT`` by name) and raises ValueError
    once more than ``max_bad_fraction`` of the samples are bad.

    The error names one flag, ``--max-bad-fraction``, which every command that reads images accepts
    (:class:`~maelab.data.config.BadFileOptions`); ``fix`` must name none that not all of them have.

    Args:
        name: sample index -> how the log and the error name it (picklable, e.g. a bound method).
        what: the samples in messages ("image files"); fix: what the error tells the user to do first.
    """

    def __init__(self, count: int, max_bad_fraction: float, name: Callable[[int], str],
                 what: str = "image files", fix: str = "repair or delete the broken files") -> None:
        self.flags = torch.zeros(count, dtype=torch.bool).share_memory_()  # (N,) seen by all workers
        self.max_bad_fraction, self.name, self.what, self.fix = max_bad_fraction, name, what, fix

    def __getitem__(self, i: int) -> bool:
        return bool(self.flags[i])

    def names(self) -> tuple[str, ...]:
        """The bad samples found so far, by any process, in index order."""
        return tuple(self.name(i) for i in self.flags.nonzero().flatten().tolist())

    def mark(self, i: int, exc: BaseException, where: str = "") -> None:
        """Never read sample ``i`` again, and log it (``where`` adds context); ValueError past the fraction."""
        self.flags[i] = True
        count = int(self.flags.sum())
        if count <= WARN_LIMIT:
            suffix = "; further bad files are logged at debug level" if count == WARN_LIMIT else ""
            logger.warning("skipping undecodable image %s%s (%s); %d bad so far%s", self.name(i), where, exc, count,
                           suffix)
        else:
            logger.debug("skipping undecodable image %s%s (%s)", self.name(i), where, exc)
        self.check()

    def check(self) -> None:
        """ValueError naming the first bad samples once more than ``max_bad_fraction`` of them are bad."""
        count, total = int(self.flags.sum()), len(self.flags)
        if count > self.max_bad_fraction * total:
            first = ", ".join(self.names()[:WARN_LIMIT])
            raise ValueError(
                f"{count} of {total} {self.what} could not be decoded, more than --max-bad-fraction "
                f"{self.max_bad_fraction:g} (first: {first}); {self.fix}, check that these are the images you "
                "meant, or raise --max-bad-fraction"
            )


def skipped_files(*datasets: Dataset | None) -> tuple[str, ...]:
    """The files (shard samples: ``SHARD/KEY``) that any of ``datasets`` found undecodable so far, each once.

    Subsets and concatenations are looked through, so two views of one split (a training and a
    validation transform) and their subsets count a file once; ``None`` and datasets that cannot
    skip files (decoded tensors) contribute nothing.
    """
    found: dict[str, None] = {}
    pending = list(datasets)
    while pending:
        data = pending.pop(0)
        if data is None:
            continue
        if isinstance(data, Subset):
            pending.append(data.dataset)
        elif isinstance(data, ConcatDataset):
            pending.extend(data.datasets)
        else:
            found.update((str(name), None) for name in getattr(data, "bad_files", ()))
    return tuple(found)


def skipped_files_report(*datasets: Dataset | None) -> dict[str, int]:
    """``{"skipped_files": n}`` and a warning naming the first few when ``datasets`` skipped files
    (:func:`skipped_files`); ``{}`` when they skipped none. What every command adds to its log records."""
    bad = skipped_files(*datasets)
    if not bad:
        return {}
    logger.warning("%d unreadable image files skipped so far (first: %s)", len(bad), ", ".join(bad[:WARN_LIMIT]))
    return {"skipped_files": len(bad)}


def skipped_files_summary(*datasets: Dataset | None) -> dict[str, object]:
    """What a command's result file (metrics.json, knn.json) says about :func:`skipped_files`: their count
    and the first ``NAMED_LIMIT`` names."""
    bad = skipped_files(*datasets)
    return {"skipped_files": len(bad), "skipped_file_names": list(bad[:NAMED_LIMIT])}


class ImageFolderDataset(Dataset):
    """Decodes image files on access; undecodable files are skipped, not fatal.

    A file that cannot be decoded when it is read (broken from the start, or damaged
    after the scan) is replaced by the next decodable index (deterministic: the same
    substitute in every process), marked bad so it is not retried, and logged (the first
    ``WARN_LIMIT`` by name). The marks are shared (:class:`BadMarks`), so :attr:`bad_files`
    counts what every DataLoader worker found. Once more than ``max_bad_fraction`` of the
    files are bad, a ``ValueError`` stops the run.

    Items: (transform(uint8 (channels, H, W)), label int).
    """

    def __init__(
        self,
        index: FolderIndex,
        channels: int,
        transform: Callable[[torch.Tensor], torch.Tensor],
        max_bad_fraction: float = 0.05,
    ) -> None:
        assert len(index.files) == len(index.labels) > 0
        # One numpy string array instead of a list of Path objects: touching Python
        # objects in forked workers bumps refcounts and copies their memory pages.
        self._paths = np.array([str(p) for p in index.files])
        self.labels = torch.tensor(index.labels, dtype=torch.int64)
        self.class_names = index.class_names
        self.channels = channels
        self.transform = transform
        self.bad_marks = BadMarks(len(self._paths), max_bad_fraction, self._name)

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        for step in range(n):
            i = (index + step) % n
            if self.bad_marks[i]:
                continue
            try:
                item = self._read(i)
            except DECODE_ERRORS as exc:
                self.mark_bad(i, exc)
                continue
            return item, int(self.labels[i])
        raise AssertionError("unreachable: mark_bad raises before every file is bad")

    def _read(self, i: int):
        """File ``i`` as an item (raises one of ``DECODE_ERRORS`` when it is unreadable)."""
        return self.transform(load_image(self.path(i), self.channels))

    def path(self, i: int) -> Path:
        return Path(self._paths[i])

    def _name(self, i: int) -> str:
        return str(self._paths[i])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    @property
    def bad_files(self) -> tuple[Path, ...]:
        """Files found undecodable so far, by any process reading this dataset."""
        return tuple(Path(name) for name in self.bad_marks.names())

    def mark_bad(self, i: int, exc: BaseException) -> None:
        """Never read file ``i`` again, and log it; ValueError past ``max_bad_fraction``. Any process may
        call this (the marks are shared): a file found broken after the loader handed its bytes over is
        marked by the process that tried to decode it."""
        self.bad_marks.mark(i, exc)


def _nonempty_scan(root: Path) -> list[Path]:
    files = scan_images(root)
    if not files:
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise ValueError(
            f"no image files ({exts}) found under {root}; point --data at a directory containing images"
        )
    return files


def _labels(files: Sequence[Path], classes: tuple[str, ...], split_dir: Path) -> list[int]:
    if not classes:
        return [-1] * len(files)
    lookup = {name: i for i, name in enumerate(classes)}
    labels = []
    for p in files:
        if len(p.parts) < 2 or p.parts[0] not in lookup:
            raise ValueError(
                f"{split_dir / p} is not inside one of the train class folders {list(classes)}; "
                "move it into a class folder, or remove the class folders to train unlabeled"
            )
        labels.append(lookup[p.parts[0]])
    return labels
