"""The labeled data an evaluation runs on, and how it is batched."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from maelab.data import DataConfig, DatasetInfo, dataset_info
from maelab.data.labels import balanced_draw
from maelab.evaluate.config import EvalDataOptions
from maelab.models import MAEConfig

logger = logging.getLogger(__name__)


def resolve_data(
    opts: EvalDataOptions, saved: dict[str, Any], model: MAEConfig | None, fixed_channels: bool,
) -> DataConfig:
    """The data to evaluate on: explicit options, else the pre-training data, at the model's geometry.

    ``fixed_channels``: the weights fix the input channels (any pre-trained encoder), so
    ``--channels`` may only repeat them. ``model`` None (raw pixels): the data's native size
    and channels unless ``--img-size`` / ``--channels`` say otherwise.
    """
    dataset = opts.dataset or saved.get("dataset") or "fashion_mnist"
    same = dataset == saved.get("dataset")
    data = opts.data if opts.data is not None else (Path(saved["data"]) if same and saved.get("data") else None)
    synthetic = opts.synthetic_size or (saved.get("synthetic_size") if same else None) or 512
    if model is None:
        return DataConfig(dataset=dataset, data=data, download=opts.download, img_size=opts.img_size,
                          channels=opts.channels, synthetic_size=synthetic, num_workers=opts.num_workers,
                          max_bad_fraction=opts.max_bad_fraction)
    height, width = model.img_size
    if opts.img_size is None and height != width:
        raise ValueError(f"the checkpoint's images are {height}x{width}; pass a square --img-size to evaluate it")
    size = opts.img_size or height
    if size % model.patch_size:
        raise ValueError(f"--img-size {size} is not a multiple of the patch size {model.patch_size}; pick one that is")
    channels = model.in_chans
    if opts.channels is not None and opts.channels != model.in_chans:
        if fixed_channels:
            raise ValueError(
                f"--channels {opts.channels} does not fit the checkpoint, whose patch embedding takes "
                f"{model.in_chans}-channel images; omit --channels (the data is converted to {model.in_chans})"
            )
        channels = opts.channels
    return DataConfig(dataset=dataset, data=data, download=opts.download, img_size=size, channels=channels,
                      synthetic_size=synthetic, num_workers=opts.num_workers, max_bad_fraction=opts.max_bad_fraction)


def labeled_info(data: DataConfig) -> DatasetInfo:
    info = dataset_info(data)
    if info.num_classes < 2:
        raise ValueError(f"{data.dataset} has {info.num_classes} classes; classification needs a labeled dataset")
    return info


def eval_loader(dataset: Dataset, batch_size: int, device: torch.device, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


# Seeds of the fixed index permutations behind the validation split and --train-subset: a split never
# depends on --seed, so every run on the same data holds out the same images.
_VAL_SEED, _SUBSET_SEED = 1, 0


def val_indices(num_images: int, opts: EvalDataOptions) -> tuple[list[int], list[int]]:
    """(training, validation) image indices of a training split of ``num_images``: a fixed random
    ``--val-size`` (or ``--val-fraction``) of them held out, the same on every call."""
    size = opts.val_size if opts.val_size is not None else int(round(num_images * opts.val_fraction))
    if size and size >= num_images:
        raise ValueError(f"the validation split ({size} images) would leave no training images out of "
                         f"{num_images}; lower --val-size / --val-fraction")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(_VAL_SEED)).tolist()
    return sorted(order[size:]), sorted(order[:size])


def split_train(train: Dataset, val: Dataset, opts: EvalDataOptions) -> tuple[Dataset, Dataset | None]:
    """The training images (minus the validation split, then ``--train-subset``) and the validation split.

    ``train`` and ``val`` are the same training split under the training and the evaluation transform (the
    same object when the two transforms are one, so the images are read and checked once).
    Streamed shards cannot be indexed: they get no validation split (a warning says so).
    """
    if isinstance(train, IterableDataset):
        if opts.labels_per_class is not None:
            raise ValueError("--labels-per-class draws images by class, which streamed shards cannot do (no random "
                             "access); write the labeled images to shards of their own, or use an image folder")
        if opts.val_size or opts.val_fraction:
            logger.warning("shards are streamed without random access: no validation split is held out, so "
                           "nothing is selected (\"best\" is the last epoch); hold one out when writing shards")
        return fixed_subset(train, opts.train_subset), None
    keep, held = val_indices(len(train), opts)
    if opts.labels_per_class is not None:
        return label_budget(train, val, keep, held, opts)
    train = fixed_subset(Subset(train, keep), opts.train_subset)
    return train, Subset(val, held) if held else None


def unlabeled_pool(train: Dataset, opts: EvalDataOptions) -> Dataset:
    """Every training image outside the validation split, labels or not: what unsupervised statistics may use."""
    return Subset(train, val_indices(len(train), opts)[0])


# The validation draw's seed is offset from the training draw's so that the two never share a random stream.
_LABEL_VAL_SEED_OFFSET = 1000


def label_budget(train: Dataset, val: Dataset, keep: list[int], held: list[int],
                 opts: EvalDataOptions) -> tuple[Dataset, Dataset | None]:
    """``--labels-per-class K``: K images of every class from ``keep`` (the training images outside the
    validation split) and at most K of every class from ``held`` (the validation split)."""
    labels = dataset_labels(train)  # (N,)
    k, seed = opts.labels_per_class, opts.label_seed
    assert k is not None
    num_classes = int(labels.max()) + 1
    chosen = [keep[i] for i in balanced_draw(labels[keep], k, seed, num_classes)]
    checked = [held[i] for i in balanced_draw(labels[held], k, seed + _LABEL_VAL_SEED_OFFSET, num_classes,
                                              cap=True)] if held else []
    logger.info("label budget: %d labeled training images (%d per class, --label-seed %d) of %d; %d validation "
                "images (at most %d per class) of %d", len(chosen), k, seed, len(keep), len(checked), k, len(held))
    return Subset(train, chosen), Subset(val, checked) if checked else None


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """(N,) int64 labels of a map-style dataset, read from its ``targets`` without loading any image."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.int64)]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError(f"--labels-per-class needs the labels of the training images, which a "
                         f"{type(dataset).__name__} does not list; use a built-in dataset or an image folder "
                         "with one sub-folder per class")
    return torch.as_tensor(targets, dtype=torch.int64)


def fixed_subset(dataset: Dataset, limit: int | None) -> Dataset:
    """The same ``limit`` random images on every call (all of them when ``limit`` is None or large)."""
    if limit is None or len(dataset) <= limit:
        return dataset
    if isinstance(dataset, IterableDataset):  # shards: written in random order, so their first images
        return dataset.configured(limit=limit)
    # Random rather than the first ones: datasets stored class by class would otherwise lose whole classes.
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(_SUBSET_SEED))[:limit]
    return Subset(dataset, order.tolist())
