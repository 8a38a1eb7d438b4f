"""Pictures of ``maelab anomaly``: per-patch heat maps over the most anomalous images, and ROC curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from maelab.anomaly.metrics import Detection

COLUMNS = 8


def save_heatmap_grid(images: torch.Tensor, errors: torch.Tensor, captions: Sequence[str], path: Path,
                      title: str = "") -> None:
    """Each image above the same image under its patch-error map, up to ``COLUMNS`` images per row.

    Args:
        images: (N, C, H, W) viewable pixels in [0, 1].
        errors: (N, h, w) patch errors on the patch grid; one colour scale for the whole grid (the smallest to
            the largest error shown), so the maps compare across images.
        captions: one line per image.
    """
    count = images.shape[0]
    if count == 0:
        return
    cols, pairs = min(count, COLUMNS), math.ceil(count / COLUMNS)
    fig = Figure(figsize=(1.5 * cols + 1.4, 3.0 * pairs + 0.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * pairs, cols, squeeze=False)
    vmin, vmax = float(errors.min()), float(errors.max())
    vmax = vmax if vmax > vmin else vmin + 1.0
    height, width = images.shape[-2:]
    shown = None
    for i in range(pairs * cols):
        pair, col = divmod(i, cols)
        top, bottom = axes[2 * pair][col], axes[2 * pair + 1][col]
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
        if i >= count:
            top.axis("off")
            bottom.axis("off")
            continue
        img = images[i].detach().cpu().permute(1, 2, 0).numpy()  # (H, W, C)
        gray = img[:, :, 0] if img.shape[2] == 1 else img[:, :, :3].mean(2)  # (H, W)
        if img.shape[2] == 1:
            top.imshow(gray, cmap="gray", vmin=0, vmax=1)
        else:
            top.imshow(img[:, :, :3])
        top.set_title(captions[i], fontsize=6)
        bottom.imshow(gray, cmap="gray", vmin=0, vmax=1)
        shown = bottom.imshow(errors[i].detach().cpu().numpy(), cmap="inferno", vmin=vmin, vmax=vmax, alpha=0.6,
                              interpolation="nearest", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    if shown is not None:
        fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, label="patch error (target space)")
    fig.suptitle(title, fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def save_roc(curves: dict[str, Detection], path: Path, title: str = "") -> None:
    """One ROC curve per score, AUROC and AUPRC in the legend, with the chance diagonal."""
    fig = Figure(figsize=(4.6, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, result in curves.items():
        ax.plot(result.fpr, result.tpr, lw=1.5, label=f"{name}: AUROC {result.auroc:.3f}, AUPRC {result.auprc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="gray", label="chance")
    ax.set_xlabel("false-positive rate (normal images flagged)")
    ax.set_ylabel("true-positive rate (anomalies found)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
