"""Typed, frozen configuration shared by the training commands."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maelab.data import DataConfig


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule (per-iteration warmup, then half-cycle cosine)."""

    blr: float = 1.5e-4
    """Base learning rate: the absolute lr is blr * effective_batch / 256 (the paper's rule)."""
    lr: float | None = None
    """Absolute learning rate; overrides blr when given."""
    min_lr: float = 0.0
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_epochs: float = 1.0
    clip_grad: float | None = None
    """Clip the global gradient norm to this value (off by default, as in the paper)."""

    def __post_init__(self) -> None:
        if self.blr <= 0 or (self.lr is not None and self.lr <= 0):
            raise ValueError("learning rate (--blr / --lr) must be positive")
        if self.warmup_epochs < 0:
            raise ValueError(f"--warmup-epochs must be >= 0; got {self.warmup_epochs}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"--clip-grad must be positive; got {self.clip_grad}")

    def absolute_lr(self, effective_batch: int) -> float:
        return self.lr if self.lr is not None else self.blr * effective_batch / 256


@dataclass(frozen=True)
class LoopConfig:
    """How the shared training loop runs: schedule length, batching, device, logging, saving."""

    epochs: int | None = None
    """Number of epochs; default: the command's own (3 for pretrain). On --resume, the run's own."""
    batch_size: int = 256
    """Per-device batch size; effective batch = batch_size * accum_iter * world size."""
    accum_iter: int = 1
    seed: int = 0
    device: str = "auto"
    """"auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"."""
    amp: Literal["auto", "bf16", "off"] = "auto"
    """bf16 autocast: "auto" turns it on for CUDA only (these CPUs have no fast bf16)."""
    log_every: int = 20
    save_every: int = 1
    """Write the resumable checkpoint every N epochs (and always after the last)."""
    save_every_steps: int | None = None
    """Also write the resumable checkpoint every N optimizer steps inside an epoch (crash insurance)."""
    keep_last: int = 1
    """Keep the newest N resumable checkpoints (checkpoint-stepNNNNNNN.*; checkpoint-last.* are links to the newest)."""
    stop_after: int | None = None
    """Stop after this many epochs in this invocation (the schedule still spans --epochs); continue with --resume."""
    tensorboard: bool = True
    """Mirror the JSONL log (and reconstruction grids) into TensorBoard event files in the run directory,
    when the tensorboard package is installed (pip install 'maelab[tensorboard]')."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """A NaN/inf loss stops the run ("stop"), or its optimizer step is skipped ("skip", up to --max-nonfinite)."""
    max_nonfinite: int = 20
    """With --on-nonfinite skip: stop once more than this many steps were skipped."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accum_iter", "log_every", "save_every", "save_every_steps",
                     "keep_last", "stop_after"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")
        if self.max_nonfinite < 0:
            raise ValueError(f"--max-nonfinite must be >= 0; got {self.max_nonfinite}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"--on-nonfinite must be 'stop' or 'skip'; got {self.on_nonfinite!r}")


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
        if self.mask_ratio is not None and not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(
                f"--mask-ratio must be in the open interval (0, 1), e.g. 0.75 (the paper's); got {self.mask_ratio}"
            )
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


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths and tuples as plain JSON values."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


def from_jsonable(cls: type, data: dict) -> Any:
    """Rebuild a (nested) config dataclass from :func:`to_jsonable` output."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        if name not in names:
            raise ValueError(f"unknown config key {name!r} for {cls.__name__}")
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_jsonable(hint, value)
        elif isinstance(value, str) and Path in (hint, *typing.get_args(hint)):
            value = Path(value)
        kwargs[name] = value
    return cls(**kwargs)
