"""The demo's anomaly view: one image's anomaly score and per-patch heat map, as ``maelab anomaly`` computes them.

The numbers come from :mod:`maelab.anomaly.scoring` itself (complementary masks, each patch's error in the
model's target space, the same reduction to one score), so the page and ``maelab anomaly`` agree on every image
scored with the same ``--masks``, ``--seed``, ``--score`` and ``--top-fraction``. A score alone means little, so
the page also scores a few held-out images of the run's own data (:func:`reference_images`: the first
``REFERENCE_IMAGES`` of its test split, of its ``--classes`` only when it had them) with the same settings and
says where the image falls among them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maelab.anomaly.scoring import Reduction, complementary_masks, image_scores, patch_errors
from maelab.data import DataConfig, DatasetInfo, build_dataset, eval_transform
from maelab.data.builders import first_items
from maelab.demo.pipeline import DISPLAY_SIZE, heatmap, to_uint8
from maelab.models import MaskedAutoencoder

REFERENCE_IMAGES = 64
"""Held-out images of the run's data scored beside each request: enough for a rough percentile, cheap on a CPU."""


@dataclass(frozen=True)
class AnomalyResult:
    """One image's anomaly score, its heat map and where it stands among the reference images."""

    original: np.ndarray
    """(H', W', 3) uint8, the image as the model sees it, enlarged for display."""
    heatmap: np.ndarray
    """(H', W', 3) uint8, each patch coloured by its error over the image."""
    score: float
    patch_errors: np.ndarray
    """(h, w) each patch's error on the patch grid."""
    scale: float
    """The error drawn brightest: the worst patch of this image or of the reference images, the larger."""
    reference_scores: np.ndarray | None
    """(R,) the reference images' scores under the same settings (None without references)."""

    @property
    def percentile(self) -> float | None:
        """Share of the reference images scoring below this image, in percent."""
        if self.reference_scores is None or len(self.reference_scores) == 0:
            return None
        return float(100.0 * np.mean(self.reference_scores < self.score))


def reference_images(info: DatasetInfo, extra: dict, count: int = REFERENCE_IMAGES,
                     max_bad_fraction: float = DataConfig.max_bad_fraction) -> torch.Tensor:
    """(R, C, H, W) the first ``count`` test images of the data a checkpoint was pre-trained on, of its
    ``--classes`` when it had them: images of the kind it was trained on that it has not seen.

    Raises:
        ValueError, FileNotFoundError: the checkpoint records no data, or its data is not on this machine.
    """
    saved = extra.get("data") or {}
    if not saved.get("dataset"):
        raise ValueError("the checkpoint records no training data")
    config = DataConfig(
        dataset=saved["dataset"], data=Path(saved["data"]) if saved.get("data") else None, download=False,
        img_size=info.img_size[0], channels=info.channels, synthetic_size=saved.get("synthetic_size") or 512,
        max_bad_fraction=max_bad_fraction, classes=saved.get("classes"),
    )
    items = first_items(build_dataset(config, "test", eval_transform(info)), count)
    if not items:
        raise ValueError("the test split of the checkpoint's data is empty")
    return torch.stack([item[0] for item in items])  # (R, C, H, W)


@torch.no_grad()
def run_anomaly_view(model: MaskedAutoencoder, info: DatasetInfo, image: torch.Tensor, masks: int = 4,
                     seed: int = 0, score: Reduction = "top", top_fraction: float = 0.1,
                     reference: torch.Tensor | None = None) -> AnomalyResult:
    """Score one normalized image (C, H, W) against the model, as ``maelab anomaly`` scores it.

    Args:
        masks: K complementary masks (mask ratio 1 - 1/K), fixed by ``seed``: ``--masks`` / ``--seed``.
        score, top_fraction: the image score from its patch errors: ``--score`` / ``--top-fraction``.
        reference: (R, C, H, W) normalized images scored with the same settings, for comparison.
    """
    cfg = model.config
    device = next(model.parameters()).device
    groups = complementary_masks(cfg.num_patches, int(masks), torch.Generator().manual_seed(int(seed)))  # (K, L)
    errors = patch_errors(model, image.unsqueeze(0).to(device), groups)[0].cpu()  # (L,)
    value = float(image_scores(errors.unsqueeze(0), score, top_fraction)[0])
    scale, ref_scores = float(errors.max()), None
    if reference is not None and len(reference):
        ref_errors = patch_errors(model, reference.to(device), groups).cpu()  # (R, L)
        ref_scores = image_scores(ref_errors, score, top_fraction).numpy()  # (R,)
        scale = max(scale, float(ref_errors.max()))
    factor = max(1, DISPLAY_SIZE // max(cfg.img_size))
    mean, std = torch.tensor(info.mean).view(-1, 1, 1), torch.tensor(info.std).view(-1, 1, 1)  # (C, 1, 1)
    original = to_uint8((image.cpu() * std + mean).clamp(0, 1), factor)
    shown = torch.ones_like(errors)  # every patch has an error
    return AnomalyResult(
        original=original,
        heatmap=heatmap(errors / max(scale, 1e-12), shown, cfg.grid_size, cfg.patch_size * factor, "inferno",
                        original),
        score=value,
        patch_errors=errors.view(*cfg.grid_size).numpy(),
        scale=scale,
        reference_scores=ref_scores,
    )


def describe(result: AnomalyResult, masks: int, seed: int, score: str, top_fraction: float, target: str,
             reference_note: str) -> str:
    """The page's text about one scored image."""
    how = {"top": f"the mean of its {top_fraction:.0%} highest patch errors", "mean": "the mean of its patch errors",
           "max": "its highest patch error"}[score]
    lines = [f"**Anomaly score: {result.score:.4f}** ({how}; {masks} complementary masks, mask ratio "
             f"{1 - 1 / masks:.2f}, seed {seed}; each patch's error in the model's `{target}` target space).",
             f"Heat map: each patch's reconstruction error from black (0) to yellow ({result.scale:.3f}, the worst "
             "patch of this image or of the reference images), over the image."]
    if result.percentile is not None:
        ref = result.reference_scores
        lines.append(f"Higher than {result.percentile:.0f}% of {len(ref)} {reference_note} (their scores: median "
                     f"{np.median(ref):.4f}, highest {ref.max():.4f}).")
    else:
        lines.append(reference_note)
    lines.append("The same numbers as `maelab anomaly` with `--masks {0} --seed {1} --score {2}"
                 "{3}`.".format(masks, seed, score, f" --top-fraction {top_fraction}" if score == "top" else ""))
    return "\n\n".join(lines)
