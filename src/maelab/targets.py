"""Reconstruction targets and the masked loss.

Patch layout follows the paper's reference code: an image (B, C, H, W) becomes
(B, h, w, p, p, C) and then (B, L, p*p*C), row-major over the patch grid.
"""

from __future__ import annotations

from typing import Literal

import torch

TargetKind = Literal["pixel", "norm_pixel"]
TARGET_KINDS: tuple[str, ...] = ("pixel", "norm_pixel")
NORM_PIX_EPS = 1e-6


def grid_shape(img_hw: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """(rows, cols) of the patch grid; ValueError when the patch does not divide the image."""
    height, width = img_hw
    if patch_size < 1 or height % patch_size or width % patch_size:
        raise ValueError(
            f"patch size {patch_size} must divide the image size {height}x{width}; "
            "choose a patch size that divides both sides or resize the images"
        )
    return height // patch_size, width // patch_size


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C) with L = (H/p)*(W/p)."""
    batch, chans, height, width = imgs.shape
    rows, cols = grid_shape((height, width), patch_size)
    p = patch_size
    x = imgs.reshape(batch, chans, rows, p, cols, p)  # (B, C, h, p, w, p)
    x = torch.einsum("bchpwq->bhwpqc", x)  # (B, h, w, p, p, C)
    return x.reshape(batch, rows * cols, p * p * chans)  # (B, L, p*p*C)


def unpatchify(
    patches: torch.Tensor, patch_size: int, grid_size: tuple[int, int], channels: int
) -> torch.Tensor:
    """(B, L, p*p*C) -> (B, C, H, W); the inverse of :func:`patchify`."""
    batch, length, dim = patches.shape
    rows, cols = grid_size
    p = patch_size
    if length != rows * cols or dim != p * p * channels:
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not fit a {rows}x{cols} grid of "
            f"{p}x{p}x{channels} patches"
        )
    x = patches.reshape(batch, rows, cols, p, p, channels)  # (B, h, w, p, p, C)
    x = torch.einsum("bhwpqc->bchpwq", x)  # (B, C, h, p, w, p)
    return x.reshape(batch, channels, rows * p, cols * p)  # (B, C, H, W)


def patch_stats(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean and unbiased variance, each (B, L, 1)."""
    mean = patches.mean(dim=-1, keepdim=True)  # (B, L, 1)
    var = patches.var(dim=-1, keepdim=True, unbiased=True)  # (B, L, 1)
    return mean, var


def normalize_patches(patches: torch.Tensor, eps: float = NORM_PIX_EPS) -> torch.Tensor:
    """The paper's normalized-pixel target: (x - mean) / sqrt(var + eps) within each patch."""
    mean, var = patch_stats(patches)
    return (patches - mean) / (var + eps) ** 0.5  # (B, L, P)


def make_target(imgs: torch.Tensor, patch_size: int, kind: str) -> torch.Tensor:
    """Regression target for every patch: (B, C, H, W) -> (B, L, p*p*C)."""
    patches = patchify(imgs, patch_size)
    if kind == "pixel":
        return patches
    if kind == "norm_pixel":
        return normalize_patches(patches)
    raise ValueError(f"unknown target {kind!r}; choose one of {', '.join(TARGET_KINDS)}")


def masked_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss_on_all: bool = False
) -> torch.Tensor:
    """Mean squared error per patch, averaged over masked patches (or all, for the ablation).

    Args:
        pred, target: (B, L, P).
        mask: (B, L), 1 = masked.
    Returns:
        scalar loss.
    """
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, L)
    if loss_on_all:
        return per_patch.mean()
    return (per_patch * mask).sum() / mask.sum()


def prediction_to_pixels(
    pred: torch.Tensor, imgs: torch.Tensor, patch_size: int, kind: str
) -> torch.Tensor:
    """Map a prediction back to (normalized-image) pixel space for display, as patches (B, L, P).

    A norm-pixel prediction has lost each patch's mean and scale. For display only we
    restore them from the true image's own patch statistics (the choice the paper's
    visualizations make); the figure must say so, since those statistics of masked
    patches are not something the model saw.
    """
    if kind == "pixel":
        return pred
    if kind == "norm_pixel":
        mean, var = patch_stats(patchify(imgs, patch_size))  # (B, L, 1) each
        return pred * (var + NORM_PIX_EPS) ** 0.5 + mean  # (B, L, P)
    raise ValueError(f"unknown target {kind!r}; choose one of {', '.join(TARGET_KINDS)}")
