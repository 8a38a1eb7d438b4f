"""Typed, frozen configuration of ``maelab pretrain``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maelab.data import DataConfig
from maelab.masking import check_mask_ratio
from maelab.train.config import LoopConfig, OptimConfig


@dataclass(frozen=True)
class ModelOptions:
    """Changes to the chosen preset; unset options keep the preset's values."""

    mask_ratio: float | None = None
    mask_strategy: Literal["random", "block", "grid"] | None = None
    target: Literal["pixel", "norm_pixel", "pca", "hog"] | None = None
    pca_components: int | None = None
    """Components kept by --target pca (default: 1/8 of the patch dimension, at least 4)."""
    decoder_depth: int | None = None
    decoder_embed_dim: int | None = None
    decoder_num_heads: int | None = None
    encoder_mask_tokens: bool | None = None
    loss_on_all: bool | None = None
    mask_patch_size: int | None = None
    """SimMIM presets only: side of the square mask unit, in patches."""

    def __post_init__(self) -> None:
        if self.mask_ratio is not None:
            check_mask_ratio(self.mask_ratio, "--mask-ratio")
        for name in ("decoder_depth", "decoder_embed_dim", "decoder_num_heads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer; got {value}")

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pre-training run needs; written to the run directory as config.json."""

    model: str = "mae_vit_fashion"
    options: ModelOptions = field(default_factory=ModelOptions)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    output_dir: Path | None = None
    """Run directory; default runs/pretrain-<model>-<time>. Never overwritten."""
    vis_every: int = 1
    """Write a reconstruction grid every N epochs (and at the end)."""
    device_augment: bool = False
    """Keep crops uint8 until the device and flip + normalize there in batch (for GPUs whose loader lags)."""
    decode_on_device: bool = False
    """Image folders of JPEGs: the loader reads the files' bytes and draws the crop boxes only; JPEGs are
    decoded in batch on the training device (torchvision decode_jpeg; nvJPEG on a GPU), then cropped,
    resized, flipped and normalized there. Other formats are decoded in the loader. Implies --device-augment."""
    knn_every: int = 0
    """Log kNN accuracy of the cls token (up to 5000 train / 2000 test images) every N epochs; 0 = never."""
    fsdp: bool = False
    """Shard the model across the torchrun processes (FSDP2 ``fully_shard``, one unit per block) instead of
    replicating it (DDP); for models too large for one device. Checkpoints stay full, so they load back on
    any number of processes. Belongs to one invocation: a resume may turn it on or off."""

    def __post_init__(self) -> None:
        if self.knn_every < 0:
            raise ValueError(f"--knn-every must be >= 0 (0 turns it off); got {self.knn_every}")
