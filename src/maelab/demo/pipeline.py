"""The demo's image pipeline, independent of the web layer.

upload -> :func:`load_upload` (decode safely, shrink, convert to the model's channels, resize /
center-crop, normalize with the checkpoint's statistics) -> :func:`run_pipeline` (mask with a
seeded generator, reconstruct, de-normalize, error and attention maps) -> :class:`DemoResult`
of viewable uint8 pictures.

Everything a request needs is created inside the call (generator, tensors); the model is only
read, so concurrent requests cannot mix their results.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageOps

from maelab.data import DatasetInfo, eval_transform
from maelab.data.images import DECODE_ERRORS, to_mode
from maelab.demo.attention import cls_attention_map
from maelab.masking import MASK_STRATEGIES, mask_from_binary
from maelab.models import MaskedAutoencoder
from maelab.visualize.figures import reconstruct

MAX_PIXELS = 40_000_000
"""Largest image (width x height, after JPEG draft reduction) that is decoded at all."""
SHRINK_FACTOR = 4
"""Uploads are shrunk to at most this multiple of the model's input size before conversion."""
DISPLAY_SIZE = 224
"""Small inputs (28 x 28 Fashion-MNIST) are enlarged by an integer factor towards this, without blur."""
GRID_RATIO = 0.75
HIDDEN_GRAY = 0.8
"""Heatmap colour of patches a map does not cover (visible ones in the error map, masked ones in attention)."""


class ImageTooLarge(ValueError):
    """An upload whose pixel count is above the demo's limit."""


@dataclass(frozen=True)
class DemoResult:
    """Viewable pictures, each (H', W', 3) uint8, and what the page says about them."""

    original: np.ndarray
    masked: np.ndarray
    reconstruction: np.ndarray
    pasted: np.ndarray
    error_map: np.ndarray
    attention_map: np.ndarray
    mask_mse: float
    max_patch_mse: float
    """The error of the worst masked patch: the top of the error map's colour scale."""
    mask_ratio: float
    """The ratio actually used (grid masking fixes it to 0.75)."""
    num_masked: int
    num_patches: int
    explanation: str
    """How the displayed pixels were obtained (de-normalization), in words."""


def load_upload(source: str | Path | bytes | BinaryIO, info: DatasetInfo, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Decode an uploaded file of any size and mode into the model's normalized input.

    Large images are shrunk before the full-size conversions happen: JPEGs decode at a
    reduced scale (PIL draft), everything is thumbnailed to ``SHRINK_FACTOR`` times the model's
    input size, and anything above ``max_pixels`` is refused from its header alone.

    Returns:
        (C, H, W) float32, the model's channels and input size, normalized with ``info``.
    Raises:
        ValueError: not a decodable image, or too large.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    target = max(info.img_size) * SHRINK_FACTOR
    mode = "L" if info.channels == 1 else "RGB"
    try:
        with Image.open(source) as img:
            width, height = img.size
            scale = target / min(width, height)
            if scale < 1 and img.format in ("JPEG", "MPO"):
                img.draft(mode, (math.ceil(width * scale), math.ceil(height * scale)))
            if img.size[0] * img.size[1] > max_pixels:
                raise ImageTooLarge(
                    f"the image is {width} x {height} pixels, more than the {max_pixels:,} the demo decodes; "
                    "upload a smaller version"
                )
            img.load()  # decode now, so truncated files fail inside this try
            # Pillow's resampling does not cover every mode (16-bit, float, CMYK): convert those first.
            small = img if img.mode in ("L", "RGB", "RGBA", "LA", "P", "1") else to_mode(img, mode)
            small.thumbnail(_thumbnail_box(small.size, target), Image.Resampling.BICUBIC)
            # Phone photos store their rotation in EXIF; show them the right way up.
            converted = to_mode(ImageOps.exif_transpose(small) if "exif" in img.info else small, mode)
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise ValueError(f"the image is too large to decode safely ({exc}); upload a smaller version") from exc
    except DECODE_ERRORS as exc:
        raise ValueError(
            f"the upload is not a readable image ({exc}); upload a PNG, JPEG, WebP, BMP, GIF or TIFF file"
        ) from exc
    array = np.array(converted, dtype=np.uint8)  # (H, W) or (H, W, 3), a private copy
    if array.ndim == 2:
        array = array[:, :, None]  # (H, W, 1)
    uint8 = torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (C_in, H, W)
    return eval_transform(info)(uint8)  # (C, H, W)


def _thumbnail_box(size: tuple[int, int], target: int) -> tuple[int, int]:
    """Bounding box that brings the shorter side down to ``target`` (never up), keeping the aspect."""
    width, height = size
    scale = min(1.0, target / min(width, height))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


@torch.no_grad()
def run_pipeline(
    model: MaskedAutoencoder, info: DatasetInfo, image: torch.Tensor, mask_ratio: float, strategy: str, seed: int
) -> DemoResult:
    """Mask, reconstruct and explain one normalized image.

    Args:
        image: (C, H, W) normalized with ``info`` (from :func:`load_upload` or the test split).
        mask_ratio: fraction of patches hidden; grid masking always hides 0.75.
        strategy: "random", "block" or "grid".
        seed: seeds this request's own generator, so the same seed shows the same mask again.
    """
    cfg = model.config
    if strategy not in MASK_STRATEGIES:
        raise ValueError(f"unknown mask strategy {strategy!r}; choose one of {', '.join(MASK_STRATEGIES)}")
    ratio = GRID_RATIO if strategy == "grid" else float(mask_ratio)
    device = next(model.parameters()).device
    imgs = image.unsqueeze(0).to(device)  # (1, C, H, W)
    rec = reconstruct(model, imgs, info.mean, info.std, ratio, strategy, int(seed))
    sample = mask_from_binary(rec.mask)
    attention = cls_attention_map(model, imgs, sample)[0]  # (L,)
    mask = rec.mask[0]  # (L,)
    errors = rec.patch_mse[0] * mask  # (L,), masked patches only
    factor = max(1, DISPLAY_SIZE // max(cfg.img_size))
    original = to_uint8(rec.original[0], factor)
    return DemoResult(
        original=original,
        masked=to_uint8(rec.masked[0], factor),
        reconstruction=to_uint8(rec.reconstruction[0], factor),
        pasted=to_uint8(rec.pasted[0], factor),
        error_map=heatmap(errors / errors.max().clamp_min(1e-12), mask, cfg.grid_size, cfg.patch_size * factor,
                           "inferno", None),
        attention_map=heatmap(attention / attention.max().clamp_min(1e-12), 1 - mask, cfg.grid_size,
                               cfg.patch_size * factor, "viridis", original),
        mask_mse=float(rec.mask_mse[0]),
        max_patch_mse=float(errors.max()),
        mask_ratio=ratio,
        num_masked=int(mask.sum()),
        num_patches=cfg.num_patches,
        explanation=explain_pixels(cfg.target, info),
    )


def explain_pixels(target: str, info: DatasetInfo) -> str:
    """What the displayed pixels are, for a model trained on ``target``."""
    stats = f"mean {_fmt(info.mean)}, std {_fmt(info.std)}"
    if target == "norm_pixel":
        return (
            "This model was trained on normalized pixels: it predicts every patch with its own mean and contrast "
            "removed, so its raw output would look like noise. For display, each predicted patch is multiplied by "
            "the standard deviation and shifted by the mean of the *true* patch (taken from the original image, "
            "which the model never saw for masked patches, as in the paper's figures), then the dataset "
            f"normalization ({stats}) is undone. The masked-patch MSE is measured on these restored patches, "
            "in units of the dataset-normalized image."
        )
    return (
        f"This model predicts pixels directly; the display only undoes the dataset normalization ({stats}). "
        "The masked-patch MSE is in units of the dataset-normalized image."
    )


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def to_uint8(img: torch.Tensor, factor: int) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H * factor, W * factor, 3) uint8, enlarged without interpolation."""
    array = (img.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)  # (C, H, W)
    array = array.expand(3, -1, -1) if array.shape[0] == 1 else array[:3]  # (3, H, W)
    array = array.repeat_interleave(factor, 1).repeat_interleave(factor, 2)  # (3, H', W')
    return array.permute(1, 2, 0).contiguous().numpy()  # (H', W', 3)


def heatmap(values: torch.Tensor, shown: torch.Tensor, grid: tuple[int, int], cell: int, cmap: str,
             base: np.ndarray | None) -> np.ndarray:
    """Colour each patch by ``values`` (L,) in [0, 1]; patches with ``shown`` == 0 stay light gray.

    With ``base`` (H', W', 3) uint8 the colours are blended over that picture.
    """
    rows, cols = grid
    colours = colormaps[cmap](values.detach().float().cpu().clamp(0, 1).numpy())[:, :3]  # (L, 3)
    colours = np.where(shown.cpu().numpy()[:, None] > 0, colours, HIDDEN_GRAY)  # (L, 3)
    cells = colours.reshape(rows, cols, 3).repeat(cell, 0).repeat(cell, 1)  # (H', W', 3)
    if base is not None:
        cells = 0.6 * cells + 0.4 * base[: cells.shape[0], : cells.shape[1]] / 255.0  # (H', W', 3)
    return (cells * 255).round().astype(np.uint8)
