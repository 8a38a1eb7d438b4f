"""In-memory dataset of uint8 images, shared by Fashion-MNIST, CIFAR-10 and synthetic.

Images stay uint8 in memory (4x smaller than float32, and the torchvision v2
tensor kernels are fastest on uint8); the transform turns them into
normalized float tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor], torch.Tensor]


class UInt8ImageDataset(Dataset):
    """Indexable ``(transform(image), label)`` pairs over a uint8 image tensor.

    Args:
        images: uint8 tensor (N, C, H, W).
        labels: integer tensor (N,); -1 marks an unlabeled image.
        transform: maps a uint8 (C, H, W) tensor to a float (C', H', W') tensor.
        class_names: names of the labels, index = label.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Transform,
        class_names: tuple[str, ...] = (),
    ) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4, (images.dtype, images.shape)
        assert labels.ndim == 1 and labels.shape[0] == images.shape[0], (labels.shape, images.shape)
        self.images = images
        self.labels = labels.to(torch.int64)
        self.transform = transform
        self.class_names = class_names

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Returns (float image (C', H', W'), label int)."""
        return self.transform(self.images[index]), int(self.labels[index])

    @property
    def targets(self) -> list[int]:
        """Labels as a list, the torchvision attribute name samplers expect."""
        return self.labels.tolist()

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"{type(self).__name__}(n={n}, shape=({c}, {h}, {w}), classes={len(self.class_names)})"
