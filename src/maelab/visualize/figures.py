"""Pictures of a run: the reconstruction grid (paper Figs. 2-4) and the loss curve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from maelab.models import MaskedAutoencoder
from maelab.targets import make_target, patchify, prediction_to_pixels, unpatchify

NOTES = {
    "pixel": "pixel model: predictions shown as predicted",
    "norm_pixel": "norm-pixel model: each predicted patch de-normalized with the true patch's mean/std (display only)",
    "pca": "PCA model: predicted coefficients shown through the fitted basis (rank-k patches)",
    "hog": "HOG model: predicts gradient histograms, not pixels; reconstruction rows show the masked input, "
           "mse is in HOG space",
}
ROW_TITLES = ("original", "masked input", "reconstruction", "reconstruction +\nvisible patches")


@dataclass(frozen=True)
class Reconstruction:
    """Viewable images, each (B, C, H, W) in [0, 1], plus the masked-patch MSE per image.

    ``mask`` (B, L) is the mask used (1 = masked) and ``patch_mse`` (B, L) each patch's squared
    error in normalized pixels, the units of ``mask_mse``.
    """

    original: torch.Tensor
    masked: torch.Tensor
    reconstruction: torch.Tensor
    pasted: torch.Tensor
    mask_mse: torch.Tensor
    note: str
    mask: torch.Tensor
    patch_mse: torch.Tensor


@torch.no_grad()
def reconstruct(
    model: MaskedAutoencoder,
    imgs: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    mask_ratio: float | None = None,
    strategy: str | None = None,
    seed: int = 0,
) -> Reconstruction:
    """Run the model on normalized images and return everything in viewable pixels.

    Args:
        imgs: (B, C, H, W) images normalized with ``mean``/``std``.
    """
    cfg = model.config
    was_training = model.training
    model.eval()
    gen = torch.Generator(imgs.device).manual_seed(seed)
    sample = model.sample_mask(imgs.shape[0], mask_ratio, gen, strategy, device=imgs.device)
    out = model(imgs, mask=sample.mask)
    model.train(was_training)
    target = patchify(imgs, cfg.patch_size)  # (B, L, P)
    w = out.mask.unsqueeze(-1)  # (B, L, 1)
    gray = (0.5 - torch.tensor(mean, device=imgs.device)) / torch.tensor(std, device=imgs.device)  # (C,)
    gray_patch = gray.repeat(cfg.patch_size * cfg.patch_size)  # (P,) in (p, p, C) order
    if cfg.target == "hog":
        # Gradient histograms have no pixel inverse: the reconstruction rows repeat the masked
        # input and the score is the masked-patch error in HOG space.
        pred = target * (1 - w) + gray_patch * w  # (B, L, P)
        patch_mse = ((out.pred.float() - make_target(imgs.float(), cfg.patch_size, "hog")) ** 2).mean(-1)  # (B, L)
    else:
        basis = model.pca_basis() if cfg.target == "pca" else None
        pred = prediction_to_pixels(out.pred.float(), imgs, cfg.patch_size, cfg.target, basis)  # (B, L, P)
        patch_mse = ((pred - target) ** 2).mean(-1)  # (B, L)
    mask_mse = (patch_mse * out.mask).sum(1) / out.mask.sum(1)  # (B,)

    def view(patches: torch.Tensor) -> torch.Tensor:
        x = unpatchify(patches, cfg.patch_size, cfg.grid_size, cfg.in_chans)  # (B, C, H, W)
        m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
        return (x * s + m).clamp(0, 1)

    note = NOTES[cfg.target]
    return Reconstruction(
        original=view(target),
        masked=view(target * (1 - w) + gray_patch * w),
        reconstruction=view(pred),
        pasted=view(target * (1 - w) + pred * w),
        mask_mse=mask_mse,
        note=note,
        mask=out.mask,
        patch_mse=patch_mse,
    )


def save_reconstruction_grid(rec: Reconstruction, path: Path, title: str = "") -> None:
    """Rows: original, masked input, reconstruction, reconstruction with visible patches pasted back."""
    rows = (rec.original, rec.masked, rec.reconstruction, rec.pasted)
    n = rec.original.shape[0]
    fig = Figure(figsize=(1.3 * n + 1.6, 1.35 * len(rows) + 0.9), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, images in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            img = images[c].detach().cpu().permute(1, 2, 0).numpy()  # (H, W, C)
            if img.shape[2] == 1:
                ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img[:, :, :3])
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(ROW_TITLES[r], fontsize=8)
            if r == 2:
                ax.set_xlabel(f"mse {float(rec.mask_mse[c]):.3f}", fontsize=7)
    fig.suptitle(f"{title}\n{rec.note}" if title else rec.note, fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def save_loss_plot(records: Sequence[dict], path: Path, title: str = "pre-training loss") -> None:
    """Plot step losses (thin) and epoch means (markers) from JSONL records."""
    steps = [r for r in records if r.get("event") == "step"]
    epochs = [r for r in records if r.get("event") == "epoch"]
    if not steps and not epochs:
        return
    fig = Figure(figsize=(6, 3.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    # An epoch's position: iterations over a whole epoch's last logged one (a schedule in optimizer
    # steps ends its last epoch early, and that epoch's mean is drawn where its steps end).
    full = max((r["iter"] for r in steps), default=1)
    ends = {r["epoch"]: r["epoch"] + r["iter"] / full for r in steps}
    if steps:
        ax.plot([r["epoch"] + r["iter"] / full for r in steps],
                [r["loss"] for r in steps], lw=0.8, alpha=0.7, label="log step")
    if epochs:
        ax.plot([ends.get(r["epoch"], r["epoch"] + 1) for r in epochs], [r["loss"] for r in epochs], "o-",
                label="epoch mean")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)

