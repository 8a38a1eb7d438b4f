"""Typed, frozen configuration of ``maelab reconstruct`` (:mod:`maelab.visualize.reconstruct`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from maelab.data.config import BadFileOptions, DatasetName
from maelab.options import DeviceOptions


@dataclass(frozen=True)
class ReconstructConfig(BadFileOptions, DeviceOptions):
    """Show original, masked input and reconstruction for a few images."""

    checkpoint: tyro.conf.Positional[Path]
    """A maelab pre-training checkpoint (.safetensors) or run directory, an official MAE .pth, or an HF directory."""
    images: tyro.conf.Positional[tuple[Path, ...]] = ()
    """Image files to reconstruct; default: the first test images of the checkpoint's dataset."""
    dataset: DatasetName | None = None
    """Dataset to draw images from (default: the one the checkpoint was trained on)."""
    data: Path | None = None
    num_images: int = 8
    mask_ratio: float = 0.75
    mask_strategy: Literal["random", "block", "grid"] = "random"
    seed: int = 0
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("reconstruction.png")
    target: Literal["pixel", "norm_pixel"] | None = None
    """What an official .pth predicts, when its name (mae_visualize_* / *_full) does not say."""
