"""Typed, frozen configuration of ``maelab anomaly``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro

from maelab.data.config import BadFileOptions, DatasetName
from maelab.evaluate.image_index import ImageSplit
from maelab.options import FeatureOptions, Pool, RuntimeOptions, WhitenOptions


@dataclass(frozen=True)
class AnomalyConfig(BadFileOptions, RuntimeOptions, FeatureOptions, WhitenOptions):
    """Anomaly scores from a MAE pre-trained on normal images only: reconstruction error and kNN distance."""

    run: tyro.conf.Positional[Path]
    """The pre-training run directory (or checkpoint) trained on normal images; also an official MAE release
    with its decoder (mae_pretrain_vit_*_full.pth, mae_visualize_vit_*.pth) or a Hugging Face ViT-MAE directory."""
    dataset: DatasetName | None = None
    """Dataset of the images to score (default: the run's)."""
    data: Path | None = None
    """Directory of the images to score, e.g. test/ with good/ and one sub-folder per kind of defect (default:
    the run's, when the dataset is the same)."""
    split: ImageSplit | None = None
    """Which images to score (default: every image of a folder, the test split of a built-in dataset)."""
    normal_class: int | None = None
    """The class (label index; a folder's sub-folders sorted by name) whose images are normal; every other class
    is anomalous (the one-class protocol on fashion_mnist or cifar10). Default: a folder's good/ sub-folder when
    there is one; without either, images are scored but AUROC/AUPRC cannot be computed."""
    masks: int = 4
    """K: the patches are split into K random groups (fixed by --seed); pass k shows group k and hides the rest
    (mask ratio 1 - 1/K: 0.75 for 4), so every patch is reconstructed K - 1 times; its error is their mean."""
    seed: int = 0
    """Seed of the patch groups (the same masks for every image)."""
    score: Literal["top", "mean", "max"] = "top"
    """Image score from its patch errors: "top" the mean of the --top-fraction highest, "mean" of all, "max"."""
    top_fraction: float = 0.1
    """--score top: the fraction of an image's patches (at least one) whose errors are averaged."""
    knn: bool = True
    """Also score each image by the kNN distance of its embedding to the normal training images."""
    train_data: Path | None = None
    """Folder of normal images for the kNN score (default: the run's own training data; with --normal-class on
    the same dataset, the training split's images of that class)."""
    k: int = 5
    """kNN score: the mean distance to the k nearest normal embeddings."""
    distance: Literal["cosine", "euclidean"] = "cosine"
    """kNN score's distance: "cosine" (1 - cosine similarity, blind to an embedding's length) or "euclidean"
    (with --whiten, the Mahalanobis distance under the normal embeddings' covariance)."""
    # The probe's default features (avg over all blocks, chosen for classification) are not the anomaly
    # score's: its committed results (results/anomaly_oneclass) were made at these, and their own choice on
    # the training split kept the cls token, so anomaly keeps its defaults.
    pool: Pool = field(default="token", kw_only=True)
    """kNN score's embedding: the cls token after the final norm, or the mean of the patch tokens (as maelab embed).
    Default: the cls token, anomaly's own (results/anomaly_oneclass, where the options chosen on the training
    split also pool the cls token), not the probe's avg chosen for classification."""
    layers: int | None = field(default=1, kw_only=True)
    """kNN score's embedding: concatenate the last k blocks' outputs (as maelab embed; unset: all blocks).
    Default 1, anomaly's own (results/anomaly_oneclass; its choice on the training split: 2)."""
    mirror: bool = False
    """kNN score: embed every image (scored and normal) and its left-right mirror image, and use the mean of the
    two embeddings (test-time augmentation: the score no longer depends on which way an object faces). For images
    whose mirror image is just as normal (clothes, tissue, satellite tiles), not for text or handed parts."""
    num_maps: int = 16
    """Draw the patch-error heat maps of this many of the most anomalous images (by reconstruction score)."""
    target: Literal["pixel", "norm_pixel"] | None = None
    """What an official .pth predicts, when its name (mae_visualize_* / *_full) does not say."""
    synthetic_size: int | None = None
    """Synthetic train images (default: the run's)."""
    download: bool = True
    batch_size: int = field(default=64, kw_only=True)
    """Images per forward pass; each is reconstructed --masks times, so a smaller batch than embed's."""
    output_dir: Path | None = None
    """Where the scores and pictures go; default runs/anomaly-<run>-<time>. Never overwritten."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.masks < 2:
            raise ValueError(f"--masks must be at least 2 (each pass hides all but one group); got {self.masks}")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"--top-fraction must be in (0, 1], e.g. 0.1; got {self.top_fraction}")
        if self.k < 1:
            raise ValueError(f"--k must be at least 1; got {self.k}")
        if self.num_maps < 0:
            raise ValueError(f"--num-maps must be >= 0; got {self.num_maps}")
        if self.normal_class is not None and self.normal_class < 0:
            raise ValueError(f"--normal-class is a class index (0, 1, ...); got {self.normal_class}")
