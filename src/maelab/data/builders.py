"""Entry points: resolve a ``DataConfig`` into ``DatasetInfo`` and datasets."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import torch
from torch.utils.data import Dataset, IterableDataset

from maelab.data import cifar, digits, fashion_mnist, folder, synthetic
from maelab.data.classes import select_index, select_tensors
from maelab.data.config import DataConfig, DatasetInfo, Split, check_split
from maelab.data.tensor_dataset import UInt8ImageDataset
from maelab.data.transforms import eval_transform

logger = logging.getLogger(__name__)

# dataset -> (native side, native channels)
_NATIVE: dict[str, tuple[int, int]] = {
    "fashion_mnist": (fashion_mnist.NATIVE_SIZE, fashion_mnist.NATIVE_CHANNELS),
    "cifar10": (cifar.NATIVE_SIZE, cifar.NATIVE_CHANNELS),
    "digits": (digits.NATIVE_SIZE, digits.NATIVE_CHANNELS),
    "synthetic": (synthetic.NATIVE_SIZE, synthetic.NATIVE_CHANNELS),
    "folder": (folder.NATIVE_SIZE, folder.NATIVE_CHANNELS),
    "shards": (folder.NATIVE_SIZE, folder.NATIVE_CHANNELS),  # shards are written from an image folder
}


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """Channels, (H, W), normalization stats and classes the model will see.

    Cheap for the built-in datasets (constants, no file access); for
    ``"folder"`` it scans ``cfg.data`` to find the classes; for ``"shards"``
    it reads ``shards.json``.
    """
    native_size, native_channels = _NATIVE[cfg.dataset]
    size = cfg.img_size if cfg.img_size is not None else native_size
    channels = cfg.channels if cfg.channels is not None else native_channels
    if cfg.dataset != "synthetic" and channels not in (1, 3):
        raise ValueError(
            f"channels={channels} is not supported for {cfg.dataset}; use 1 (grayscale) or 3 (RGB)"
        )

    if cfg.dataset == "synthetic":
        mean, std = synthetic.stats(channels, size)
        names = synthetic.CLASS_NAMES
    elif cfg.dataset == "folder":
        root = folder.check_root(cfg.data)
        mean, std = folder.folder_stats(root, channels)
        names = folder.folder_class_names(root)
    elif cfg.dataset == "shards":
        from maelab.data import shards  # needs the optional webdataset package

        index = shards.read_index(cfg.data)
        names = tuple(index["class_names"])
        mean, std = _adapt_stats(*shards.shard_stats(index, channels, cfg.data), channels)
    else:
        module = {"fashion_mnist": fashion_mnist, "cifar10": cifar, "digits": digits}[cfg.dataset]
        mean, std = _adapt_stats(module.MEAN, module.STD, channels)
        names = module.CLASS_NAMES
    return DatasetInfo(
        name=cfg.dataset,
        channels=channels,
        img_size=(size, size),
        mean=mean,
        std=std,
        num_classes=len(names),
        class_names=names,
    )


def build_dataset(
    cfg: DataConfig,
    split: Split,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> Dataset:
    """Dataset of ``(image float (C, H, W), label int)`` items, label -1 when unlabeled.

    ``"shards"`` gives a :class:`~maelab.data.shards.ShardDataset` (an IterableDataset, streamed);
    the others are map-style.

    ``transform`` receives uint8 (C_native, H, W) tensors; ``None`` means
    ``eval_transform(dataset_info(cfg))`` so the items are always model-ready.
    """
    check_split(split)
    info = dataset_info(cfg)
    if transform is None:
        transform = eval_transform(info)

    if cfg.dataset == "shards":
        from maelab.data.shards import ShardDataset

        if cfg.classes is not None:
            raise ValueError("--classes cannot filter streamed shards; shard a folder of those classes' images, "
                             "or train on the folder the shards were written from")

        data = ShardDataset(cfg.data, split, transform, channels=info.channels, max_bad_fraction=cfg.max_bad_fraction)
        logger.info("shards %s split: %d images in %d shards", split, len(data), len(data.urls))
        return data
    if cfg.dataset == "folder":
        root = folder.check_root(cfg.data)
        index = select_index(folder.index_split(root, split), cfg.classes, str(root), split)
        logger.info("folder %s split: %d images, %d classes", split, len(index.files), len(index.class_names))
        return folder.ImageFolderDataset(index, info.channels, transform, cfg.max_bad_fraction)

    if cfg.dataset == "fashion_mnist":
        images, labels = fashion_mnist.load_split(*fashion_mnist.locate(cfg, split))
        images = images.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    elif cfg.dataset == "cifar10":
        images, labels = cifar.load_split(cifar.locate(cfg, split), split)
    elif cfg.dataset == "digits":
        images, labels = digits.load_split(digits.locate(cfg), split)
        images = images.unsqueeze(1)  # (N, 8, 8) -> (N, 1, 8, 8)
    else:
        images, labels = synthetic.generate_split(cfg.synthetic_size, info.channels, info.img_size[0], split)
    images, labels = select_tensors(images, labels, cfg.classes, info.class_names, cfg.dataset, split)
    logger.info("%s %s split: %d images %s", cfg.dataset, split, images.shape[0], tuple(images.shape[1:]))
    return UInt8ImageDataset(images, labels, transform, info.class_names)


def first_items(dataset: Dataset, n: int) -> list:
    """The first ``n`` items (or all when fewer); of a streamed dataset, the first it yields."""
    if isinstance(dataset, IterableDataset):
        return list(itertools.islice(iter(dataset), n))
    return [dataset[i] for i in range(min(n, len(dataset)))]


def _adapt_stats(
    mean: tuple[float, ...], std: tuple[float, ...], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Native stats re-expressed for ``channels`` (1 <-> 3) after MatchChannels."""
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1:  # gray repeated into RGB: every channel has the gray stats
        return mean * channels, std * channels
    # RGB -> luma: the luma mean is exact; its std is approximated by the weighted stds
    # (exact only for fully correlated channels, which natural images nearly are).
    weights = (0.2989, 0.587, 0.114)
    luma_mean = sum(w * m for w, m in zip(weights, mean))
    luma_std = sum(w * s for w, s in zip(weights, std))
    return (round(luma_mean, 4),), (round(luma_std, 4),)
