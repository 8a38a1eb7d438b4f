"""Typed, frozen configuration of ``maelab pretrain``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from maelab.data import DataConfig
from maelab.masking import check_mask_ratio
from maelab.models.registry import DEFAULT_MODEL, preset_help
from maelab.train.budget import BudgetPlan, check_time_budget
from maelab.train.config import LoopConfig, OptimConfig

DEFAULT_TIME_BUDGET = "10m"
"""A new run's schedule when neither --epochs, --steps nor --time-budget is given."""


@dataclass(frozen=True)
class ModelOptions:
    """Changes to the chosen preset; unset options keep the preset's values."""

    mask_ratio: float | None = None
    """Fraction of patches hidden from the encoder, in (0, 1) (paper: 0.75)."""
    mask_strategy: Literal["random", "block", "grid"] | None = None
    """How the hidden patches are chosen: uniformly at random (paper), in blocks, or a regular grid (Table 1f)."""
    target: Literal["pixel", "norm_pixel", "pca", "hog"] | None = None
    """What the decoder predicts for a hidden patch: its pixels, its per-patch normalized pixels (paper's best),
    its PCA coefficients, or its HOG features (Table 1d)."""
    pca_components: int | None = None
    """Components kept by --target pca (default: 1/8 of the patch dimension, at least 4)."""
    decoder_depth: int | None = None
    """Transformer blocks in the decoder (paper: 8; deeper mostly helps the linear probe, Table 1a)."""
    decoder_embed_dim: int | None = None
    """Decoder width (paper: 512); a multiple of 4 and of --decoder-num-heads."""
    decoder_num_heads: int | None = None
    """Attention heads in the decoder; must divide --decoder-embed-dim."""
    encoder_mask_tokens: bool | None = None
    """Send mask tokens through the encoder too (Table 1c's slower variant; default: only visible patches)."""
    loss_on_all: bool | None = None
    """Compute the loss on every patch instead of only the hidden ones (the paper: hidden only)."""
    mask_patch_size: int | None = None
    """SimMIM presets only: side of the square mask unit, in patches."""
    patch_size: int | None = None
    """Side of a square patch in pixels; must divide the image size (a coarser patch means fewer tokens,
    so more images per second)."""
    embed_dim: int | None = None
    """Encoder width; a multiple of 4 and of --num-heads."""
    depth: int | None = None
    """Transformer blocks in the encoder."""
    num_heads: int | None = None
    """Attention heads in the encoder; must divide --embed-dim."""

    def __post_init__(self) -> None:
        if self.mask_ratio is not None:
            check_mask_ratio(self.mask_ratio, "--mask-ratio")
        for name in ("decoder_depth", "decoder_embed_dim", "decoder_num_heads", "patch_size", "embed_dim", "depth",
                     "num_heads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer; got {value}")

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pre-training run needs; written to the run directory as config.json."""

    model: Annotated[str | None, tyro.conf.arg(help=preset_help(
        f"Model preset (default {DEFAULT_MODEL}; the encoder, mask and decoder options below change it). With --init "
        "the source decides the architecture: leave --model out, or name a preset of the same architecture "
        "(another one is an error)."))] = None
    init: Path | None = None
    """Start from this model's weights instead of random ones (domain-adaptive pre-training): a maelab run or
    checkpoint, an official mae_pretrain_vit_*.pth / *_full.pth / mae_visualize_vit_*.pth, or a transformers
    ViT-MAE directory. The source decides the architecture; --img-size resamples its position embeddings,
    --channels adapts an RGB patch projection, and a decoder it lacks (or that the decoder options, --target
    or --encoder-mask-tokens change) is initialized fresh. The optimizer and schedule start fresh (not --resume).
    config.json records the source and its sha256."""
    init_sha256: Annotated[str | None, tyro.conf.Suppress] = None
    """sha256 of the --init file(s) the run started from (written to config.json, never given)."""
    options: ModelOptions = field(default_factory=ModelOptions)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    time_budget: str | None = None
    """Train for this long, e.g. 90s, 10m, 1.5h or 1h30m (default 10m when neither --epochs nor --steps is
    given). A few optimizer steps on a copy of the model first time the step on this machine and data; the
    run then gets the most steps (--steps) whose warmup and cosine schedule complete within the budget,
    counting the setup and the epoch-end pictures and checkpoints. config.json records the plan."""
    plan: Annotated[BudgetPlan | None, tyro.conf.Suppress] = None
    """How --time-budget planned the schedule (written to config.json, never given; --resume replays it)."""
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
    """Log kNN accuracy of the cls token on the validation split every N epochs (0 = never): up to 2000 of the
    images held out of the training split (10%, as the evaluation commands' --val-fraction) queried against up
    to 5000 of the others; the test split is not looked at."""
    fsdp: bool = False
    """Shard the model across the torchrun processes (FSDP2 ``fully_shard``, one unit per block) instead of
    replicating it (DDP); for models too large for one device. Checkpoints stay full, so they load back on
    any number of processes. Belongs to one invocation: a resume may turn it on or off."""

    def __post_init__(self) -> None:
        if self.knn_every < 0:
            raise ValueError(f"--knn-every must be >= 0 (0 turns it off); got {self.knn_every}")
        if self.optim.warmup_epochs is not None and self.optim.warmup_fraction is not None:
            raise ValueError(f"--warmup-epochs {self.optim.warmup_epochs} and --warmup-fraction "
                             f"{self.optim.warmup_fraction} exclude each other; give one")
        check_time_budget(self.time_budget, self.plan, self.loop)


def with_default_schedule(cfg: PretrainConfig) -> PretrainConfig:
    """A new run's schedule written out: --time-budget 10m unless --epochs, --steps or --time-budget says
    otherwise, and the default warmup (10% of a schedule in steps, else 1 epoch)."""
    budget = cfg.time_budget
    if budget is None and cfg.loop.epochs is None and cfg.loop.steps is None:
        budget = DEFAULT_TIME_BUDGET
    step_schedule = budget is not None or cfg.loop.steps is not None
    return dataclasses.replace(cfg, time_budget=budget, optim=cfg.optim.resolved(step_schedule))


def check_fsdp_schedule(cfg: PretrainConfig) -> None:
    """A new --fsdp run needs a fixed schedule: the time budget's measurement copies the model, and a sharded
    one cannot be copied yet."""
    check_time_budget(cfg.time_budget, cfg.plan, cfg.loop, cfg.fsdp)
