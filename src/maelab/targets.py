"""Reconstruction targets and the masked loss.

Patch layout follows the paper's reference code: an image (B, C, H, W) becomes
(B, h, w, p, p, C) and then (B, L, p*p*C), row-major over the patch grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

TargetKind = Literal["pixel", "norm_pixel", "pca", "hog"]
TARGET_KINDS: tuple[str, ...] = ("pixel", "norm_pixel", "pca", "hog")
NORM_PIX_EPS = 1e-6
PCA_STD_EPS = 1e-6
HOG_BINS = 9
HOG_EPS = 1e-5


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


def make_target(
    imgs: torch.Tensor, patch_size: int, kind: str, pca: PCABasis | None = None, hog_bins: int = HOG_BINS
) -> torch.Tensor:
    """Regression target for every patch: (B, C, H, W) -> (B, L, D).

    D is p*p*C for the pixel targets, k for "pca" (which needs the fitted ``pca`` basis) and
    :func:`hog_dim` for "hog".
    """
    if kind == "pixel":
        return patchify(imgs, patch_size)
    if kind == "norm_pixel":
        return normalize_patches(patchify(imgs, patch_size))
    if kind == "pca":
        if pca is None:
            raise ValueError("the PCA target needs a fitted basis (fit_pca on training patches)")
        return pca_project(patchify(imgs, patch_size), pca)
    if kind == "hog":
        return hog_patches(imgs, patch_size, hog_bins)
    raise ValueError(f"unknown target {kind!r}; choose one of {', '.join(TARGET_KINDS)}")


def target_dim(kind: str, patch_size: int, channels: int, pca_components: int, hog_bins: int = HOG_BINS) -> int:
    """Numbers the decoder predicts per patch for a target kind."""
    if kind in ("pixel", "norm_pixel"):
        return patch_size * patch_size * channels
    if kind == "pca":
        return pca_components
    if kind == "hog":
        return hog_dim(patch_size, channels, hog_bins)
    raise ValueError(f"unknown target {kind!r}; choose one of {', '.join(TARGET_KINDS)}")


# ---------------------------------------------------------------------------- PCA coefficients
@dataclass(frozen=True)
class PCABasis:
    """A PCA basis of standardized patches.

    Attributes:
        mean, std: (P,) per-dimension statistics of the fitting patches (std includes eps).
        components: (k, P) orthonormal rows, by decreasing explained variance.
        variance: (k,) variance of each coefficient on the fitting patches.
    """

    mean: torch.Tensor
    std: torch.Tensor
    components: torch.Tensor
    variance: torch.Tensor


def default_pca_components(patch_dim: int) -> int:
    """The paper keeps 96 of ViT-B's 768 dims (1/8); tiny patches keep at least 4 (4 of 16 for 4x4x1)."""
    return min(patch_dim, max(4, patch_dim // 8))


def fit_pca(patches: torch.Tensor, k: int) -> PCABasis:
    """Fit the ``k`` leading principal components of standardized patches.

    Args:
        patches: (N, P) training patches (N >= 2).
        k: components to keep, 1 <= k <= P.
    Returns:
        The basis in float32, on the patches' device; each component's sign is fixed so that
        its largest-magnitude entry is positive (a deterministic result for the same data).
    """
    num, dim = patches.shape
    if not 1 <= k <= dim:
        raise ValueError(f"pca_components must be between 1 and the patch dimension {dim}; got {k}")
    if num < 2:
        raise ValueError(f"fitting PCA needs at least 2 patches; got {num}")
    x = patches.double()
    mean = x.mean(dim=0)  # (P,)
    std = (x.var(dim=0, unbiased=True) + PCA_STD_EPS).sqrt()  # (P,)
    eigvals, eigvecs = principal_axes((x - mean) / std)  # (P,), (P, P)
    components = eigvecs[:, :k].T  # (k, P)
    peak = components.gather(1, components.abs().argmax(dim=1, keepdim=True))  # (k, 1)
    components = components * torch.sign(peak)  # (k, P)
    return PCABasis(mean.float(), std.float(), components.float(), eigvals[:k].clamp_min(0).float())


def principal_axes(centered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample covariance's eigenvalues (D,), largest first, and unit eigenvectors (D, D) as columns, of
    ``centered`` (N, D) rows of zero mean. An exact eigendecomposition, in the input's dtype (float64 for the
    callers): deterministic, unlike randomized PCA."""
    variances, vectors = torch.linalg.eigh(centered.T @ centered / (centered.shape[0] - 1))  # (D,), (D, D) ascending
    return variances.flip(0), vectors.flip(1)


def pca_project(patches: torch.Tensor, basis: PCABasis) -> torch.Tensor:
    """(..., P) patches -> (..., k) coefficients of the standardized patches."""
    z = (patches - basis.mean) / basis.std  # (..., P)
    return z @ basis.components.T  # (..., k)


def pca_invert(coefficients: torch.Tensor, basis: PCABasis) -> torch.Tensor:
    """(..., k) coefficients -> (..., P) patches (exact for k = P, the best rank-k fit otherwise)."""
    return (coefficients @ basis.components) * basis.std + basis.mean  # (..., P)


# ---------------------------------------------------------------------------- HOG features
def hog_cell_size(patch_size: int) -> int:
    """MaskFeat's layout: 2x2 cells per patch (8-pixel cells in 16-pixel patches); odd patches are one cell."""
    return patch_size // 2 if patch_size % 2 == 0 else patch_size


def hog_dim(patch_size: int, channels: int, bins: int = HOG_BINS) -> int:
    cells = patch_size // hog_cell_size(patch_size)
    return cells * cells * channels * bins


def hog_cells(imgs: torch.Tensor, cell_size: int, bins: int = HOG_BINS, eps: float = HOG_EPS) -> torch.Tensor:
    """Histograms of oriented gradients per cell, each channel on its own (MaskFeat-style).

    Gradients are central differences ([-1, 0, 1] filters, edge pixels replicated); the
    unsigned orientation in [0, 180) degrees picks one of ``bins`` equal bins, each pixel
    votes its gradient magnitude, a cell's histogram is the mean vote over its pixels and is
    L2-normalized as v / sqrt(|v|^2 + eps^2) (scikit-image's L2 block norm with 1x1-cell blocks).

    Args:
        imgs: (B, C, H, W) with H and W divisible by ``cell_size``.
    Returns:
        (B, C, bins, H / cell_size, W / cell_size).
    """
    batch, chans, height, width = imgs.shape
    if height % cell_size or width % cell_size:
        raise ValueError(f"HOG cell size {cell_size} must divide the image size {height}x{width}")
    x = imgs.float().reshape(batch * chans, 1, height, width)  # (B*C, 1, H, W)
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (B*C, 1, H+2, W+2)
    diff = torch.tensor([-1.0, 0.0, 1.0], device=x.device)
    kernels = torch.zeros(2, 1, 3, 3, device=x.device)
    kernels[0, 0, 1, :] = diff  # d/dx (columns)
    kernels[1, 0, :, 1] = diff  # d/dy (rows, pointing down)
    grad = F.conv2d(x, kernels)  # (B*C, 2, H, W)
    gx, gy = grad[:, 0], grad[:, 1]  # (B*C, H, W) each
    magnitude = torch.hypot(gx, gy)  # (B*C, H, W)
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0  # (B*C, H, W), in [0, 180)
    index = (angle * (bins / 180.0)).floor().long().clamp_(0, bins - 1)  # (B*C, H, W)
    votes = F.one_hot(index, bins).permute(0, 3, 1, 2) * magnitude.unsqueeze(1)  # (B*C, bins, H, W)
    hist = F.avg_pool2d(votes, cell_size)  # (B*C, bins, H/c, W/c)
    hist = hist / (hist.pow(2).sum(dim=1, keepdim=True) + eps**2).sqrt()  # (B*C, bins, H/c, W/c)
    return hist.reshape(batch, chans, bins, height // cell_size, width // cell_size)


def hog_patches(imgs: torch.Tensor, patch_size: int, bins: int = HOG_BINS) -> torch.Tensor:
    """The HOG target: (B, C, H, W) -> (B, L, n*n*C*bins), n = cells per patch side, layout (n, n, C, bins)."""
    cell = hog_cell_size(patch_size)
    rows, cols = grid_shape(tuple(imgs.shape[-2:]), patch_size)
    n = patch_size // cell
    hist = hog_cells(imgs, cell, bins)  # (B, C, bins, h*n, w*n)
    batch, chans = hist.shape[:2]
    x = hist.reshape(batch, chans, bins, rows, n, cols, n)  # (B, C, bins, h, n, w, n)
    x = torch.einsum("bcohiwj->bhwijco", x)  # (B, h, w, n, n, C, bins), o = orientation bin
    return x.reshape(batch, rows * cols, n * n * chans * bins)  # (B, L, n*n*C*bins)


def _mean_over_patches(per_patch: torch.Tensor, mask: torch.Tensor, loss_on_all: bool) -> torch.Tensor:
    """(B, L) per-patch losses -> their mean over masked patches (or over all patches)."""
    if loss_on_all:
        return per_patch.mean()
    return (per_patch * mask).sum() / mask.sum()


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
    return _mean_over_patches(((pred - target) ** 2).mean(dim=-1), mask, loss_on_all)  # (B, L) -> ()


def masked_l1(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss_on_all: bool = False
) -> torch.Tensor:
    """SimMIM's loss: mean absolute error over the values of masked patches (or all patches).

    Args:
        pred, target: (B, L, P).
        mask: (B, L), 1 = masked.
    Returns:
        scalar loss.
    """
    return _mean_over_patches((pred - target).abs().mean(dim=-1), mask, loss_on_all)  # (B, L) -> ()


def prediction_to_pixels(
    pred: torch.Tensor, imgs: torch.Tensor, patch_size: int, kind: str, pca: PCABasis | None = None
) -> torch.Tensor:
    """Map a prediction back to (normalized-image) pixel space for display, as patches (B, L, P).

    A norm-pixel prediction has lost each patch's mean and scale. For display only we
    restore them from the true image's own patch statistics (the choice the paper's
    visualizations make); the figure must say so, since those statistics of masked
    patches are not something the model saw. PCA coefficients invert through the basis
    (the best rank-k view of a patch). HOG features have no pixel inverse: ValueError.
    """
    if kind == "pixel":
        return pred
    if kind == "norm_pixel":
        mean, var = patch_stats(patchify(imgs, patch_size))  # (B, L, 1) each
        return pred * (var + NORM_PIX_EPS) ** 0.5 + mean  # (B, L, P)
    if kind == "pca":
        if pca is None:
            raise ValueError("PCA predictions need the fitted basis to become pixels")
        return pca_invert(pred, pca)  # (B, L, P)
    if kind == "hog":
        raise ValueError("HOG predictions are gradient histograms and cannot be turned back into pixels")
    raise ValueError(f"unknown target {kind!r}; choose one of {', '.join(TARGET_KINDS)}")
