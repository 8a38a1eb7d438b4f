"""``--classes``: keep only the images of some labels, e.g. the one normal class of a one-class benchmark.

The filter runs on the loaded labels before any dataset object is built, so the result is the same kind of
dataset as without it (an in-memory tensor set, an image folder) and keeps every attribute the evaluations and
``maelab anomaly`` read (``targets``, file paths, the unreadable-file marks). Labels keep their values: a run
on ``--classes 3`` still calls its images class 3 of the dataset's ten, so its class names and everything
written about labels match a run on the whole dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maelab.data.folder import FolderIndex


def check_classes(classes: Sequence[int], class_names: Sequence[str], dataset: str) -> None:
    """Every label in ``classes`` names a class of the dataset.

    Raises:
        ValueError: the dataset has no labels (an image folder without class sub-folders), or a label is
            not one of its classes; the message lists the classes there are.
    """
    if not class_names:
        raise ValueError(f"--classes needs labeled images, but the {dataset} images have no labels (an image "
                         "folder gets them from one sub-folder per class); drop --classes, or point --data at a "
                         "folder holding only the images to train on")
    unknown = [c for c in classes if not 0 <= c < len(class_names)]
    if unknown:
        listed = ", ".join(f"{i} {name}" for i, name in enumerate(class_names))
        raise ValueError(f"--classes {' '.join(map(str, unknown))}: not a label of {dataset}, whose "
                         f"{len(class_names)} classes are {listed}")


def keep_rows(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """(N,) bool: the rows whose label is one of ``classes``."""
    return torch.isin(labels, torch.tensor(list(classes), dtype=labels.dtype))


def select_tensors(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int] | None,
                   class_names: Sequence[str], dataset: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N', ...) images and (N',) labels of ``classes`` (all of them when ``classes`` is None), in order."""
    if classes is None:
        return images, labels
    check_classes(classes, class_names, dataset)
    keep = keep_rows(labels, classes)  # (N,)
    _check_found(int(keep.sum()), classes, dataset, split)
    return images[keep], labels[keep]


def select_index(index: FolderIndex, classes: Sequence[int] | None, root: str, split: str) -> FolderIndex:
    """The files of an image folder's split whose class is one of ``classes`` (all when None), in order."""
    if classes is None:
        return index
    check_classes(classes, index.class_names, f"folder {root}")
    wanted = set(classes)
    keep = [i for i, label in enumerate(index.labels) if label in wanted]
    _check_found(len(keep), classes, f"folder {root}", split)
    return FolderIndex(files=tuple(index.files[i] for i in keep), labels=tuple(index.labels[i] for i in keep),
                       class_names=index.class_names)


def _check_found(count: int, classes: Sequence[int], dataset: str, split: str) -> None:
    if count == 0:
        raise ValueError(f"--classes {' '.join(map(str, classes))}: the {split} split of {dataset} has no image "
                         "of these classes")
