"""Datasets and transforms for MAE pre-training and evaluation.

Public API (nothing is loaded or scanned at import time)::

    cfg = DataConfig(dataset="fashion_mnist")
    info = dataset_info(cfg)
    train = build_dataset(cfg, "train", pretrain_transform(info))
    test = build_dataset(cfg, "test", eval_transform(info))

Items are ``(float32 image (C, H, W), label int)``; label is -1 when unlabeled.
"""

from maelab.data.builders import build_dataset, dataset_info
from maelab.data.config import BadFileOptions, DataConfig, DatasetInfo, DatasetNotFoundError
from maelab.data.idx import IDXFormatError, read_idx, write_idx
from maelab.data.transforms import MatchChannels, eval_transform, pretrain_transform

__all__ = [
    "BadFileOptions",
    "DataConfig",
    "DatasetInfo",
    "DatasetNotFoundError",
    "IDXFormatError",
    "MatchChannels",
    "build_dataset",
    "dataset_info",
    "eval_transform",
    "pretrain_transform",
    "read_idx",
    "write_idx",
]
