"""Every image of a dataset, with what identifies it: the rows ``maelab embed`` and ``maelab anomaly`` write.

A split of a built-in dataset is indexed by position; a folder's images by path. ``--split all`` of a folder
reads every image file under it, whatever the hash split would put in train or test (a folder too small for
a hash split works too). Unreadable files are the folder dataset's to skip (:class:`ImageFolderDataset`
serves the next readable image in their place): :func:`readable` finds those rows afterwards, so they are
dropped from the results and named instead.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset, IterableDataset, Subset

from maelab.data import DataConfig, DatasetInfo, build_dataset
from maelab.data.folder import (
    FolderIndex,
    ImageFolderDataset,
    check_root,
    class_names_of,
    index_split,
    scan_images,
    split_dirs,
)

ImageSplit = Literal["all", "train", "test"]
INDEX_COLUMNS = ("row", "split", "index", "path", "label", "class")


@dataclass(frozen=True)
class ImageSet:
    """The images of one split, as read: ``dataset`` items are (image, label), label -1 when unlabeled."""

    split: str
    """"train", "test", or "all" (every image of a folder)."""
    dataset: Dataset


def image_sets(data: DataConfig, info: DatasetInfo, transform: Callable[[torch.Tensor], torch.Tensor],
               split: ImageSplit) -> list[ImageSet]:
    """The images of ``split``: a built-in dataset's train and/or test split; for ``"all"`` of a folder, every
    image file under it (:func:`every_file`)."""
    if data.dataset == "shards":
        raise ValueError("shards are streamed, not read by index, so their images cannot be listed row by row; "
                         "pass the image folder they were written from (--dataset folder --data DIR)")
    if data.dataset == "folder" and split == "all":
        index = every_file(check_root(data.data))
        return [ImageSet("all", ImageFolderDataset(index, info.channels, transform, data.max_bad_fraction))]
    names = ("train", "test") if split == "all" else (split,)
    return [ImageSet(name, build_dataset(data, name, transform)) for name in names]


def every_file(root: Path) -> FolderIndex:
    """Every image under a folder dataset's ``root``: with train/ and test/ (or val/) sub-folders their images
    in that order, labeled by the train classes; else every file in path order, labeled by its first-level
    sub-folder when every file sits in one (-1 otherwise)."""
    if split_dirs(root) is not None:
        train, test = index_split(root, "train"), index_split(root, "test")
        return FolderIndex(train.files + test.files, train.labels + test.labels, train.class_names)
    relative = scan_images(root)
    if not relative:
        raise ValueError(f"no image files found under {root}; point --data at a directory containing images")
    classes = class_names_of(relative)
    lookup = {name: i for i, name in enumerate(classes)}
    labels = tuple(lookup[p.parts[0]] if classes else -1 for p in relative)
    return FolderIndex(tuple(root / p for p in relative), labels, classes)


def class_names(dataset: Dataset) -> tuple[str, ...]:
    """The label names of a dataset (through a Subset); ``()`` when unlabeled."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return tuple(getattr(base, "class_names", ()))


def readable(dataset: Dataset) -> torch.Tensor:
    """(N,) bool: False for the rows of files found unreadable (the dataset served another image there).

    Call after reading the dataset: a file counts as unreadable once some read of it failed.
    """
    if isinstance(dataset, IterableDataset):
        raise ValueError("a streamed dataset has no rows to check; pass an image folder or a built-in dataset")
    if isinstance(dataset, Subset):
        return readable(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    bad = {str(p) for p in getattr(dataset, "bad_files", ())}
    if not bad:
        return torch.ones(len(dataset), dtype=torch.bool)
    return torch.tensor([str(dataset.path(i)) not in bad for i in range(len(dataset))])


def skipped(dataset: Dataset) -> tuple[str, ...]:
    """The files of ``dataset`` (through a Subset: of the whole split) found unreadable so far."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return tuple(str(p) for p in getattr(base, "bad_files", ()))


def index_rows(images: ImageSet, keep: torch.Tensor, labels: torch.Tensor, first_row: int = 0) -> list[dict]:
    """One record per kept row (``keep`` (N,) bool, ``labels`` (N,)): its output row, split, index in the split,
    file path (folders), label and class name (both empty when unlabeled)."""
    dataset, names = images.dataset, class_names(images.dataset)
    base, positions = dataset, list(range(len(dataset)))
    if isinstance(dataset, Subset):
        base, positions = dataset.dataset, list(dataset.indices)
    rows = []
    for i in keep.nonzero().flatten().tolist():
        label = int(labels[i])
        rows.append(dict(row=first_row + len(rows), split=images.split, index=positions[i],
                         path=str(base.path(positions[i])) if isinstance(base, ImageFolderDataset) else "",
                         label=label if label >= 0 else "",
                         **{"class": names[label] if 0 <= label < len(names) else ""}))
    return rows


def csv_bytes(rows: Sequence[dict], columns: Sequence[str]) -> bytes:
    """``rows`` as CSV with a header line (what :func:`maelab.checkpoint.atomic_write` writes)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()
