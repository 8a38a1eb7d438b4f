"""Train/eval transforms on uint8 tensors (torchvision.transforms.v2).

Input: uint8 tensor (C_in, H_in, W_in) with C_in in {1, 3} (or already
``info.channels``). Output: float32 tensor (info.channels, H, W), normalized
with ``info.mean``/``info.std``. Everything geometric runs on uint8 (cheaper
than float and what the v2 kernels are optimised for); the float conversion
and normalization come last.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from maelab.data.config import DatasetInfo

logger = logging.getLogger(__name__)

# MAE (He et al. 2021) pre-training augmentation: crops keep 20%..100% of the area.
PRETRAIN_SCALE: tuple[float, float] = (0.2, 1.0)
_BICUBIC = v2.InterpolationMode.BICUBIC


class MatchChannels(torch.nn.Module):
    """Adapt the channel count: 1 -> N repeats, 3 -> 1 takes the luma.

    Shapes: (..., C_in, H, W) -> (..., channels, H, W); dtype unchanged.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        c_in = img.shape[-3]
        if c_in == self.channels:
            return img
        if c_in == 1:
            return img.expand(*img.shape[:-3], self.channels, *img.shape[-2:]).contiguous()
        if c_in == 3 and self.channels == 1:
            return TF.rgb_to_grayscale(img, num_output_channels=1)
        raise ValueError(
            f"cannot turn {c_in}-channel images into {self.channels} channels; "
            f"set channels to {c_in}, or to 1/3 for grayscale/RGB data"
        )

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def pretrain_transform(info: DatasetInfo) -> Callable[[torch.Tensor], torch.Tensor]:
    """MAE pre-training augmentation.

    RandomResizedCrop(img_size, scale=(0.2, 1.0), bicubic) + RandomHorizontalFlip,
    then channel matching, float conversion and Normalize(mean, std).
    uint8 (C_in, H_in, W_in) -> float32 (channels, H, W).
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(info.img_size, scale=PRETRAIN_SCALE, interpolation=_BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(),
            *_finish(info),
        ]
    )


def pretrain_crop_uint8(info: DatasetInfo) -> Callable[[torch.Tensor], torch.Tensor]:
    """The CPU half of the pre-training augmentation when the rest runs on the device in batch.

    RandomResizedCrop + channel matching, staying uint8 (4x less to copy to the device); the flip
    and normalization follow there with :func:`batch_flip_normalize`.
    uint8 (C_in, H_in, W_in) -> uint8 (channels, H, W).
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(info.img_size, scale=PRETRAIN_SCALE, interpolation=_BICUBIC, antialias=True),
            MatchChannels(info.channels),
        ]
    )


def batch_flip_normalize(imgs: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                         flip: torch.Tensor) -> torch.Tensor:
    """Horizontal flip where ``flip`` is true, then normalization, for a uint8 batch on any device.

    imgs (B, C, H, W) uint8, flip (B,) bool -> (B, C, H, W) float32, equal to ToDtype(scale) + Normalize.
    """
    imgs = torch.where(flip.view(-1, 1, 1, 1), imgs.flip(-1), imgs)  # (B, C, H, W)
    m = torch.tensor(mean, device=imgs.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    s = torch.tensor(std, device=imgs.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return (imgs.float() / 255 - m) / s


def eval_transform(info: DatasetInfo) -> Callable[[torch.Tensor], torch.Tensor]:
    """Deterministic evaluation transform.

    Resize the shorter side (bicubic) to img_size, center crop to img_size,
    then channel matching, float conversion and Normalize(mean, std).
    uint8 (C_in, H_in, W_in) -> float32 (channels, H, W).
    """
    # For a non-square target the shorter side goes to the larger target side so
    # the crop never has to pad.
    return v2.Compose(
        [
            v2.Resize(max(info.img_size), interpolation=_BICUBIC, antialias=True),
            v2.CenterCrop(info.img_size),
            *_finish(info),
        ]
    )


def _finish(info: DatasetInfo) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    return [
        MatchChannels(info.channels),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(info.mean), list(info.std)),
    ]
