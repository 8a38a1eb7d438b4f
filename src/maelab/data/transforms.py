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
from typing import get_args

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from maelab.data.config import Augment, DatasetInfo

logger = logging.getLogger(__name__)

# MAE (He et al. 2021) pre-training augmentation: crops keep 20%..100% of the area.
PRETRAIN_SCALE: tuple[float, float] = (0.2, 1.0)
_BICUBIC = v2.InterpolationMode.BICUBIC
# Fixed-size crops come from an image resized by 1/0.875 (the classic 256 -> 224 ImageNet crop).
FIXED_CROP_RATIO = 0.875
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
AUGMENTS: tuple[str, ...] = get_args(Augment)


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


def pretrain_transform(info: DatasetInfo,
                       augment: str = "random_resized_crop") -> Callable[[torch.Tensor], torch.Tensor]:
    """Pre-training augmentation (the paper's Table 1e ablation picks ``augment``).

    - ``"none"``: no augmentation: the evaluation transform (resize shorter side, center crop).
    - ``"fixed_crop"``: resize the shorter side to img_size / 0.875 (224 -> 256), random crop of
      img_size, horizontal flip.
    - ``"random_resized_crop"`` (the paper's default): RandomResizedCrop(scale=(0.2, 1.0),
      bicubic) + horizontal flip.
    - ``"crop_jitter"``: the default plus color jitter (brightness/contrast/saturation 0.4, hue 0.1;
      saturation and hue leave 1-channel images unchanged).

    Then channel matching, float conversion and Normalize(mean, std).
    uint8 (C_in, H_in, W_in) -> float32 (channels, H, W).
    """
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTS)}")
    if augment == "none":
        return eval_transform(info)
    if augment == "fixed_crop":
        resize = round(max(info.img_size) / FIXED_CROP_RATIO)
        geometric = [v2.Resize(resize, interpolation=_BICUBIC, antialias=True), v2.RandomCrop(info.img_size)]
    else:
        geometric = [_random_resized_crop(info)]
    # Jitter runs on uint8 after channel matching, so a grayscale model sees grayscale jitter.
    jitter = [v2.ColorJitter(**JITTER)] if augment == "crop_jitter" else []
    finish = _finish(info)
    return v2.Compose([*geometric, v2.RandomHorizontalFlip(), finish[0], *jitter, *finish[1:]])


def pretrain_crop_uint8(info: DatasetInfo) -> Callable[[torch.Tensor], torch.Tensor]:
    """The CPU half of the pre-training augmentation when the rest runs on the device in batch.

    RandomResizedCrop + channel matching, staying uint8 (4x less to copy to the device); the flip
    and normalization follow there with :func:`batch_flip_normalize`.
    uint8 (C_in, H_in, W_in) -> uint8 (channels, H, W).
    """
    return v2.Compose([_random_resized_crop(info), MatchChannels(info.channels)])


class CropBox:
    """The box :func:`pretrain_crop_uint8`'s RandomResizedCrop cuts from an image of a given size, drawn
    from the same global-RNG draws, without the pixels (``--decode-on-device`` decodes them later).

    ``(height, width) -> (top, left, crop height, crop width)``; picklable, for loader workers.
    """

    def __init__(self, info: DatasetInfo) -> None:
        self.crop = _random_resized_crop(info)

    def __call__(self, height: int, width: int) -> tuple[int, int, int, int]:
        # make_params reads only the size of its input: a broadcast view of the right shape holds no pixels.
        shape_only = torch.zeros((1, 1, 1), dtype=torch.uint8).expand(1, height, width)  # (1, height, width)
        box = self.crop.make_params([shape_only])
        return box["top"], box["left"], box["height"], box["width"]


def resized_crop_uint8(img: torch.Tensor, box: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
    """Cut ``box`` (top, left, height, width) and resize it to ``size`` as RandomResizedCrop does
    (torchvision's own kernel, bicubic with antialias), on the tensor's device.

    uint8 (C, H_in, W_in) -> uint8 (C, size[0], size[1]).
    """
    return TF.resized_crop(img, *box, size=list(size), interpolation=_BICUBIC, antialias=True)


def batch_flip_normalize(imgs: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                         flip: torch.Tensor) -> torch.Tensor:
    """Horizontal flip where ``flip`` is true, then normalization, for a uint8 batch on any device.

    imgs (B, C, H, W) uint8, flip (B,) bool -> (B, C, H, W) float32, equal to ToDtype(scale) + Normalize.
    """
    imgs = torch.where(flip.view(-1, 1, 1, 1), imgs.flip(-1), imgs)  # (B, C, H, W)
    m = torch.tensor(mean, device=imgs.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    s = torch.tensor(std, device=imgs.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return (imgs.float() / 255 - m) / s


def _random_resized_crop(info: DatasetInfo) -> v2.RandomResizedCrop:
    return v2.RandomResizedCrop(info.img_size, scale=PRETRAIN_SCALE, interpolation=_BICUBIC, antialias=True)


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
