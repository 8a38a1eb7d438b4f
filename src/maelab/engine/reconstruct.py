"""``maelab reconstruct``: the paper's Figure 2/4 picture from a checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from maelab.data import DataConfig, DatasetInfo, build_dataset, eval_transform
from maelab.data.images import DECODE_ERRORS, load_image
from maelab.engine.checkpoint import load_checkpoint
from maelab.engine.visualize import Reconstruction, reconstruct, save_reconstruction_grid
from maelab.masking import num_visible
from maelab.models import MAEConfig, MaskedAutoencoder, build_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconstructConfig:
    """Show original, masked input and reconstruction for a few images."""

    checkpoint: Path
    """A maelab pre-training checkpoint (.safetensors) or its run directory."""
    images: tuple[Path, ...] = ()
    """Image files to reconstruct; default: the first test images of the checkpoint's dataset."""
    dataset: Literal["fashion_mnist", "folder", "cifar10", "synthetic"] | None = None
    """Dataset to draw images from (default: the one the checkpoint was trained on)."""
    data: Path | None = None
    num_images: int = 8
    mask_ratio: float = 0.75
    mask_strategy: Literal["random", "block", "grid"] = "random"
    seed: int = 0
    output: Path = Path("reconstruction.png")
    device: str = "cpu"


def load_mae(path: Path, device: str | torch.device = "cpu") -> tuple[MaskedAutoencoder, DatasetInfo, dict]:
    """Rebuild a pre-trained MAE and its data statistics from a checkpoint."""
    weights, meta = load_checkpoint(path, device)
    if meta.kind != "mae":
        raise ValueError(f"{path} is a {meta.kind!r} checkpoint; reconstruction needs a pre-training ('mae') checkpoint")
    model = build_model(MAEConfig.from_dict(meta.model_config)).to(device)
    model.load_state_dict(weights)
    raw = dict(meta.data_info or {})
    if not raw:
        raise ValueError(f"{path} records no data statistics; it cannot be shown in viewable pixels")
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return model.eval(), DatasetInfo(**raw), meta.extra


def run_reconstruct(cfg: ReconstructConfig) -> Path:
    """Write the reconstruction grid; returns the output path."""
    if cfg.num_images < 1:
        raise ValueError(f"--num-images must be at least 1; got {cfg.num_images}")
    model, info, extra = load_mae(cfg.checkpoint, cfg.device)
    num_visible(model.config.num_patches, cfg.mask_ratio)
    transform = eval_transform(info)
    if cfg.images:
        missing = [str(p) for p in cfg.images if not Path(p).is_file()]
        if missing:
            raise ValueError(f"image files not found: {', '.join(missing)}")
        imgs = torch.stack([transform(_read_image(Path(p), info.channels)) for p in cfg.images])
    else:
        saved = extra.get("data", {})
        data_cfg = DataConfig(
            dataset=cfg.dataset or saved.get("dataset", info.name),
            data=cfg.data if cfg.data is not None else (Path(saved["data"]) if saved.get("data") else None),
            img_size=info.img_size[0], channels=info.channels,
        )
        dataset = build_dataset(data_cfg, "test", transform)
        imgs = torch.stack([dataset[i][0] for i in range(min(cfg.num_images, len(dataset)))])
    rec: Reconstruction = reconstruct(
        model, imgs.to(cfg.device), info.mean, info.std, cfg.mask_ratio, cfg.mask_strategy, cfg.seed
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


__all__ = ["ReconstructConfig", "load_mae", "run_reconstruct"]
