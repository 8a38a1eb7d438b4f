"""Which images ``maelab anomaly`` scores, which it compares them with, and which of them are normal."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from maelab.anomaly.config import AnomalyConfig
from maelab.data import DataConfig
from maelab.evaluate.image_index import ImageSplit
from maelab.models import MAEConfig

logger = logging.getLogger(__name__)

NORMAL_FOLDER = "good"
"""The sub-folder of normal images in a folder of test images (the MVTec AD layout)."""


@dataclass(frozen=True)
class Images:
    """A dataset configuration and the split of it to read."""

    data: DataConfig
    split: ImageSplit

    def overlaps(self, other: Images) -> bool:
        """Whether the two may hold the same images (the same data, and the same split or "all")."""
        same = (self.data.dataset, self.data.data) == (other.data.dataset, other.data.data)
        return same and (self.split == other.split or "all" in (self.split, other.split))


def scored_images(cfg: AnomalyConfig, saved: dict[str, Any], model: MAEConfig) -> Images:
    """The images to score: ``--dataset`` / ``--data`` / ``--split``, else the run's dataset (its data directory
    when the dataset is the same), at the model's size and channels."""
    dataset = cfg.dataset or saved.get("dataset")
    if dataset is None:
        raise ValueError(f"{cfg.run} records no dataset; pass the images to score with --dataset and --data")
    same = dataset == saved.get("dataset")
    data = cfg.data if cfg.data is not None else (Path(saved["data"]) if same and saved.get("data") else None)
    height, width = model.img_size
    if height != width:
        raise ValueError(f"{cfg.run} takes {height}x{width} images; maelab anomaly scores square models only")
    config = DataConfig(
        dataset=dataset, data=data, download=cfg.download, img_size=height, channels=model.in_chans,
        synthetic_size=cfg.synthetic_size or (saved.get("synthetic_size") if same else None) or 512,
        num_workers=cfg.num_workers, max_bad_fraction=cfg.max_bad_fraction,
    )
    return Images(config, cfg.split or ("all" if dataset == "folder" else "test"))


def normal_images(cfg: AnomalyConfig, saved: dict[str, Any], scored: Images) -> Images | None:
    """The normal images of the kNN score: every image of ``--train-data``; else the run's training data (a
    folder's every image, a built-in dataset's training split; only the run's ``--classes`` when it had them). None
    when neither is known (an imported model)."""
    base = scored.data
    if cfg.train_data is not None:
        config = DataConfig(dataset="folder", data=cfg.train_data, img_size=base.img_size, channels=base.channels,
                            num_workers=base.num_workers, max_bad_fraction=base.max_bad_fraction)
        return Images(config, "all")
    if not saved.get("dataset"):
        logger.warning("%s records no training data: no kNN score (pass --train-data DIR of normal images)", cfg.run)
        return None
    config = DataConfig(
        dataset=saved["dataset"], data=Path(saved["data"]) if saved.get("data") else None, download=cfg.download,
        img_size=base.img_size, channels=base.channels, synthetic_size=saved.get("synthetic_size") or 512,
        num_workers=base.num_workers, max_bad_fraction=base.max_bad_fraction, classes=saved.get("classes"),
    )
    return Images(config, "all" if config.dataset == "folder" else "train")


def normal_label(class_names: tuple[str, ...], normal_class: int | None) -> int | None:
    """The label of the normal images: ``--normal-class``, else a folder's good/ sub-folder; None: not known."""
    if normal_class is not None:
        if normal_class >= len(class_names):
            have = f"{len(class_names)} classes ({', '.join(class_names)})" if class_names else "no labels"
            raise ValueError(f"--normal-class {normal_class} is not a class of the images to score: they have {have}")
        return normal_class
    if NORMAL_FOLDER in class_names:
        return class_names.index(NORMAL_FOLDER)
    logger.warning("no normal class: name the normal images' sub-folder %s/ or pass --normal-class K for "
                   "AUROC/AUPRC (the images are scored all the same)", NORMAL_FOLDER)
    return None


def only_class(dataset: Dataset, label: int) -> Subset:
    """The images of ``dataset`` with ``label`` (labels read without decoding an image)."""
    keep = [i for i, target in enumerate(dataset.targets) if target == label]
    if not keep:
        raise ValueError(f"the normal training images hold no image of class {label}; check --normal-class, or "
                         "pass --train-data DIR of normal images")
    return Subset(dataset, keep)
