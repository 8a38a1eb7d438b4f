"""Typed, frozen configuration shared by every training command: the loop, the optimizer, JSON round trips."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

DEFAULT_WARMUP_FRACTION = 0.1
"""Warmup of a schedule given in optimizer steps (--steps, --time-budget) when none is given."""


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
    warmup_epochs: float | None = None
    """Linear warmup length in epochs (default: 1 epoch, or 10% of a schedule given in optimizer steps:
    --steps, --time-budget)."""
    warmup_fraction: float | None = None
    """Linear warmup as a fraction of the whole schedule, in [0, 1) (e.g. 0.1), instead of --warmup-epochs:
    it keeps its share when --time-budget plans the schedule's length. Wins over --warmup-epochs where a
    command gives that a default (finetune, linprobe); pretrain refuses both."""
    clip_grad: float | None = None
    """Clip the global gradient norm to this value (off by default, as in the paper)."""

    def __post_init__(self) -> None:
        if self.blr <= 0 or (self.lr is not None and self.lr <= 0):
            raise ValueError("learning rate (--blr / --lr) must be positive")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError(f"--warmup-epochs must be >= 0; got {self.warmup_epochs}")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"--warmup-fraction must be in [0, 1), e.g. 0.1; got {self.warmup_fraction}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"--clip-grad must be positive; got {self.clip_grad}")

    def absolute_lr(self, effective_batch: int) -> float:
        return self.lr if self.lr is not None else self.blr * effective_batch / 256

    def warmup(self, total: float, per_epoch: float, step_schedule: bool) -> float:
        """The warmup's length in the schedule's own unit: ``total`` epochs (``per_epoch`` = 1) or, for
        ``step_schedule``, ``total`` optimizer steps of which ``per_epoch`` make an epoch."""
        if self.warmup_fraction is not None:
            return self.warmup_fraction * total
        if self.warmup_epochs is not None:
            return self.warmup_epochs * per_epoch
        return DEFAULT_WARMUP_FRACTION * total if step_schedule else per_epoch

    def resolved(self, step_schedule: bool) -> OptimConfig:
        """This config with the default warmup written out (what config.json records for a new run)."""
        if self.warmup_epochs is not None or self.warmup_fraction is not None:
            return self
        if step_schedule:
            return dataclasses.replace(self, warmup_fraction=DEFAULT_WARMUP_FRACTION)
        return dataclasses.replace(self, warmup_epochs=1.0)


@dataclass(frozen=True)
class LoopConfig:
    """How the shared training loop runs: schedule length, batching, device, logging, saving."""

    epochs: int | None = None
    """Number of epochs; default: the command's own (pretrain: --time-budget 10m instead). On --resume, the
    run's own."""
    steps: int | None = None
    """Total optimizer steps, instead of --epochs: the lr schedule (warmup, then half-cycle cosine to --min-lr)
    spans exactly these steps and the last epoch ends early where they run out (pretrain --time-budget plans it)."""
    batch_size: int = 256
    """Per-device batch size; effective batch = batch_size * accum_iter * world size."""
    accum_iter: int = 1
    seed: int = 0
    device: str = "auto"
    """"auto" (CUDA, else Apple's MPS, else the CPU), "cpu", "cuda", "cuda:N" or "mps"."""
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    """Autocast: "auto" is bf16 on a CUDA GPU that supports it, else fp16 there, and off on other devices (most
    CPUs have no fast bf16 matmul); "fp16" scales the loss (torch.amp.GradScaler, its state is checkpointed)."""
    log_every: int = 20
    save_every: int = 1
    """Write the resumable checkpoint every N epochs (and always after the last)."""
    save_every_steps: int | None = None
    """Also write the resumable checkpoint every N optimizer steps inside an epoch (crash insurance)."""
    keep_last: int = 1
    """Keep the newest N resumable checkpoints (checkpoint-stepNNNNNNN.*; checkpoint-last.* are links to the newest)."""
    stop_after: int | None = None
    """Stop after this many epochs in this invocation (the schedule still spans --epochs / --steps); continue
    with --resume."""
    tensorboard: bool = True
    """Mirror the JSONL log (and reconstruction grids) into TensorBoard event files in the run directory,
    when the tensorboard package is installed (pip install 'maelab[tensorboard]')."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """A NaN/inf loss stops the run ("stop"), or its optimizer step is skipped ("skip", up to --max-nonfinite)."""
    max_nonfinite: int = 20
    """With --on-nonfinite skip: stop once more than this many steps were skipped."""
    compile: bool = False
    """Compile the model for the training step (torch.compile): faster steps once compiled, on a GPU mostly.
    The first steps wait for the compilation (minutes on a CPU, where it also needs a C++ compiler such as
    gcc); evaluations and pictures run uncompiled, and checkpoints are the same as without it. Belongs to one
    invocation: a resume may turn it on or off."""

    def __post_init__(self) -> None:
        for name in ("epochs", "steps", "batch_size", "accum_iter", "log_every", "save_every", "save_every_steps",
                     "keep_last", "stop_after"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")
        if self.epochs is not None and self.steps is not None:
            raise ValueError(f"--epochs {self.epochs} and --steps {self.steps} exclude each other: a schedule is "
                             "given either in epochs or in optimizer steps (a --time-budget run has --steps)")
        if self.max_nonfinite < 0:
            raise ValueError(f"--max-nonfinite must be >= 0; got {self.max_nonfinite}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"--on-nonfinite must be 'stop' or 'skip'; got {self.on_nonfinite!r}")

    def schedule_epochs(self, optimizer_steps_per_epoch: int) -> int:
        """Epochs the schedule runs: ``epochs``, or as many as ``steps`` reach into (the last one partial)."""
        if self.steps is None:
            assert self.epochs is not None, "resolve the command's default schedule first"
            return self.epochs
        return math.ceil(self.steps / optimizer_steps_per_epoch)


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
        # An optional nested config (``Plan | None``) is rebuilt like a plain one.
        nested = [h for h in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(h)]
        if nested and isinstance(value, dict):
            value = from_jsonable(nested[0], value)
        elif isinstance(value, str) and Path in (hint, *typing.get_args(hint)):
            value = Path(value)
        kwargs[name] = value
    return cls(**kwargs)


def changed_options(cfg: Any) -> list[str]:
    """The command-line options that give a flat config ``cfg`` from its defaults (to record how a result was made)."""
    default = type(cfg)()
    args: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (tuple, list)):
            args += [flag, *(str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return args
