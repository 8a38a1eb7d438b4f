"""The loader half of ``pretrain --decode-on-device``: an image folder whose JPEGs leave the loader undecoded.

A worker reads a JPEG's bytes and its size from the header (no pixel is decoded) and draws the
RandomResizedCrop box with the sample's seeded RNG, exactly the draws the uint8 crop transform of
``--device-augment`` makes; the training process decodes the batch (``decode_jpeg`` of TorchCodec or
torchvision, :mod:`maelab.data.jpeg`, on its device) and cuts the boxes there
(:mod:`maelab.train.device_decode`). Other files (PNG, CMYK
JPEGs, ...) are decoded and cropped in the worker as before, so a folder may mix formats; broken files
are skipped and counted as in :class:`~maelab.data.folder.ImageFolderDataset`.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch

from maelab.data import folder
from maelab.data.classes import select_index
from maelab.data.config import DataConfig, DatasetInfo
from maelab.data.folder import FolderIndex, ImageFolderDataset
from maelab.data.images import read_jpeg_undecoded
from maelab.data.transforms import CropBox, pretrain_crop_uint8

logger = logging.getLogger(__name__)

NO_BOX = (0, 0, 0, 0)


class EncodedItem(NamedTuple):
    """One training image as a worker hands it over."""

    data: torch.Tensor
    """The JPEG file's bytes (N,) uint8 when ``encoded``, else the finished crop (channels, H, W) uint8."""
    encoded: bool
    box: tuple[int, int, int, int]
    """(top, left, height, width) to cut from the decoded JPEG; ``NO_BOX`` for a finished crop."""
    file: int
    """Index of the file read (the requested one, or the substitute for a broken file)."""
    key: int
    """The requested index, and below the seed it was drawn with: what redraws the item elsewhere."""
    seed: int


class EncodedBatch(NamedTuple):
    """:func:`collate_encoded`'s batch of B items, K of them finished crops; a few large tensors, which
    cross from the loader's workers (and get pinned) far cheaper than B small ones."""

    data: torch.Tensor  # (N,) uint8: the JPEG files one after another
    offsets: torch.Tensor  # (B + 1,) int64: row r's bytes are data[offsets[r]:offsets[r + 1]] (none for a crop)
    pixels: torch.Tensor  # (K, channels, H, W) uint8: the finished crops, in row order
    encoded: torch.Tensor  # (B,) bool
    boxes: torch.Tensor  # (B, 4) int64: top, left, height, width
    files: torch.Tensor  # (B,) int64
    keys: torch.Tensor  # (B,) int64
    seeds: torch.Tensor  # (B,) int64 (sample seeds are below 2**63)
    labels: torch.Tensor  # (B,) int64

    def jpeg(self, row: int) -> torch.Tensor:
        """Row ``row``'s JPEG bytes (n,) uint8, a view."""
        return self.data[int(self.offsets[row]):int(self.offsets[row + 1])]

    def item(self, row: int) -> EncodedItem:
        """Row ``row`` as the loader produced it."""
        encoded = bool(self.encoded[row])
        data = self.jpeg(row) if encoded else self.pixels[int((~self.encoded[:row]).sum())]
        return EncodedItem(data, encoded, tuple(self.boxes[row].tolist()), int(self.files[row]),
                           int(self.keys[row]), int(self.seeds[row]))


def collate_encoded(items: list[tuple[EncodedItem, int]]) -> EncodedBatch:
    """Batch the items of :class:`EncodedFolderDataset`."""
    parts = [item for item, _ in items]
    sizes = [p.data.numel() if p.encoded else 0 for p in parts]
    crops = [p.data for p in parts if not p.encoded]
    return EncodedBatch(
        data=torch.cat([p.data for p in parts if p.encoded] or [torch.empty(0, dtype=torch.uint8)]),  # (N,)
        offsets=torch.tensor([0, *sizes], dtype=torch.int64).cumsum(0),  # (B + 1,)
        pixels=torch.stack(crops) if crops else torch.empty(0, dtype=torch.uint8),  # (K, C, H, W), or (0,)
        encoded=torch.tensor([p.encoded for p in parts], dtype=torch.bool),  # (B,)
        boxes=torch.tensor([p.box for p in parts], dtype=torch.int64).view(-1, 4),  # (B, 4)
        files=torch.tensor([p.file for p in parts], dtype=torch.int64),  # (B,)
        keys=torch.tensor([p.key for p in parts], dtype=torch.int64),  # (B,)
        seeds=torch.tensor([p.seed for p in parts], dtype=torch.int64),  # (B,)
        labels=torch.tensor([label for _, label in items], dtype=torch.int64),  # (B,)
    )


class EncodedFolderDataset(ImageFolderDataset):
    """An image folder's training split as :class:`EncodedItem` s (see the module docstring).

    Must be read through :class:`~maelab.train.loader.SeededSamples`, which seeds the global RNGs
    per item: the box is drawn from them, and the item records the seed to be redrawn with.
    Items: (EncodedItem, label int).
    """

    def __init__(self, index: FolderIndex, info: DatasetInfo, max_bad_fraction: float = 0.05) -> None:
        super().__init__(index, info.channels, pretrain_crop_uint8(info), max_bad_fraction)
        self.crop_box = CropBox(info)

    def __getitem__(self, index: int) -> tuple[EncodedItem, int]:
        item, label = super().__getitem__(index)
        # SeededSamples seeded torch's default generator with this sample's seed just before.
        return item._replace(key=index, seed=torch.initial_seed()), label

    def _read(self, i: int) -> EncodedItem:
        jpeg = read_jpeg_undecoded(self.path(i))
        if jpeg is None:  # not a JPEG that decode_jpeg handles: the CPU crop, the same draws
            return EncodedItem(super()._read(i), False, NO_BOX, i, -1, -1)
        data, (height, width) = jpeg
        return EncodedItem(data, True, self.crop_box(height, width), i, -1, -1)


def build_encoded_folder(cfg: DataConfig, info: DatasetInfo) -> EncodedFolderDataset:
    """The training split of the folder dataset ``cfg`` for ``--decode-on-device``."""
    root = folder.check_root(cfg.data)
    index = select_index(folder.index_split(root, "train"), cfg.classes, str(root), "train")
    logger.info("folder train split: %d images, %d classes; JPEGs are decoded on the training device",
                len(index.files), len(index.class_names))
    return EncodedFolderDataset(index, info, cfg.max_bad_fraction)
