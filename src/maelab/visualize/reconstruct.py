"""``maelab reconstruct``: the paper's Figure 2/4 picture from a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from maelab.data import DataConfig, DatasetInfo, build_dataset, eval_transform
from maelab.data.builders import first_items
from maelab.data.config import BadFileOptions
from maelab.data.folder import skipped_files_report
from maelab.data.images import DECODE_ERRORS, load_image
from maelab.interop.load import load_source
from maelab.masking import num_visible
from maelab.models import MaskedAutoencoder
from maelab.train.environment import resolve_device
from maelab.visualize.config import ReconstructConfig
from maelab.visualize.figures import Reconstruction, reconstruct, save_reconstruction_grid

logger = logging.getLogger(__name__)


def load_mae(
    path: Path, device: str | torch.device = "cpu", target: str | None = None
) -> tuple[MaskedAutoencoder, DatasetInfo, dict]:
    """Rebuild a pre-trained MAE and its data statistics from a maelab checkpoint, an official MAE
    release (.pth) or a Hugging Face directory; the third value holds the training data config
    under ``"data"`` (empty for imported files)."""
    imported = load_source(path, target)
    model = imported.build().to(device)  # ValueError naming the fix for an encoder-only file
    if imported.data_info is None:
        raise ValueError(f"{path} records no data statistics; it cannot be shown in viewable pixels")
    if imported.origin != "maelab":
        logger.info("%s: %s model, predicts %s (%s)", path, imported.origin, imported.config.target,
                    imported.target_source)
    return model, imported.data_info, {"data": imported.data}


def checkpoint_test_set(
    info: DatasetInfo, extra: dict, dataset: str | None = None, data: Path | None = None, download: bool = True,
    max_bad_fraction: float = BadFileOptions.max_bad_fraction,
):
    """The test split of the dataset a checkpoint was trained on (or of ``dataset``/``data``), eval-transformed;
    unreadable files are skipped up to ``max_bad_fraction`` (``--max-bad-fraction``)."""
    saved = extra.get("data", {})
    data_cfg = DataConfig(
        dataset=dataset or saved.get("dataset", info.name),
        data=data if data is not None else (Path(saved["data"]) if saved.get("data") else None),
        img_size=info.img_size[0], channels=info.channels, download=download,
        synthetic_size=saved.get("synthetic_size", DataConfig.synthetic_size), max_bad_fraction=max_bad_fraction,
    )
    return build_dataset(data_cfg, "test", eval_transform(info))


def run_reconstruct(cfg: ReconstructConfig) -> Path:
    """Write the reconstruction grid; returns the output path."""
    if cfg.num_images < 1:
        raise ValueError(f"--num-images must be at least 1; got {cfg.num_images}")
    device = resolve_device(cfg.device)
    model, info, extra = load_mae(cfg.checkpoint, device, cfg.target)
    num_visible(model.config.num_patches, cfg.mask_ratio)
    transform = eval_transform(info)
    if cfg.images:
        missing = [str(p) for p in cfg.images if not Path(p).is_file()]
        if missing:
            raise ValueError(f"image files not found: {', '.join(missing)}")
        imgs = torch.stack([transform(_read_image(Path(p), info.channels)) for p in cfg.images])
    else:
        if not extra.get("data") and cfg.dataset is None:
            raise ValueError(f"{cfg.checkpoint} records no dataset to draw images from; pass image files or --dataset")
        dataset = checkpoint_test_set(info, extra, cfg.dataset, cfg.data, max_bad_fraction=cfg.max_bad_fraction)
        imgs = torch.stack([item[0] for item in first_items(dataset, cfg.num_images)])
        skipped_files_report(dataset)
    rec: Reconstruction = reconstruct(
        model, imgs.to(device), info.mean, info.std, cfg.mask_ratio, cfg.mask_strategy, cfg.seed
    )
    title = f"{Path(cfg.checkpoint).name}: mask ratio {cfg.mask_ratio} ({cfg.mask_strategy}), seed {cfg.seed}"
    save_reconstruction_grid(rec, cfg.output, title)
    logger.info("wrote %s (masked-patch mse %.4f)", cfg.output, float(rec.mask_mse.mean()))
    return cfg.output


def _read_image(path: Path, channels: int) -> torch.Tensor:
    try:
        return load_image(path, channels)
    except DECODE_ERRORS as exc:
        raise ValueError(f"{path} is not a readable image ({exc}); pass image files such as PNG or JPEG") from exc


__all__ = ["ReconstructConfig", "checkpoint_test_set", "load_mae", "run_reconstruct"]
