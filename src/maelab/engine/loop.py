"""The one training loop shared by pre-training, fine-tuning and linear probing.

A command supplies a ``step_fn`` that turns a batch into a :class:`StepOutput`; the loop
owns everything else: lr schedule, gradient accumulation, autocast, clipping, the
non-finite check, progress bar, JSONL log, epoch callbacks and checkpoints.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from maelab.engine.config import LoopConfig, OptimConfig
from maelab.engine.optim import lr_at, set_lr, total_grad_norm
from maelab.engine.rundir import JsonlLog

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class StepOutput:
    """What a step function returns: the loss to minimize and extra scalars to log."""

    loss: torch.Tensor
    batch_size: int
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Environment:
    """Where training runs; returned by :func:`setup_environment`, never global."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_environment(cfg: LoopConfig) -> Environment:
    """Resolve the device and autocast dtype from the loop config."""
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    amp = None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda"):
        amp = torch.bfloat16
    return Environment(device=device, amp_dtype=amp)


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """A reproducible 63-bit seed per (run seed, epoch, stream), independent of call order."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_epoch(seed: int, epoch: int) -> None:
    """Reseed the global RNGs at each epoch start, so resuming at an epoch boundary replays exactly."""
    value = epoch_seed(seed, epoch, "global")
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def make_loader_fn(dataset, batch_size: int, seed: int, env: Environment, num_workers: int):
    """A function giving each epoch's DataLoader with an order fixed by (seed, epoch)."""

    def make(epoch: int) -> DataLoader:
        gen = torch.Generator().manual_seed(epoch_seed(seed, epoch, "data"))
        return DataLoader(
            dataset, batch_size=batch_size, sampler=RandomSampler(dataset, generator=gen), drop_last=True,
            num_workers=num_workers, pin_memory=env.device.type == "cuda", generator=gen,
        )

    return make


@dataclass
class Progress:
    """Counters the loop advances and checkpoints: the next epoch and optimizer steps so far."""

    epoch: int = 0
    step: int = 0


@dataclass
class TrainLoop:
    """One run of the shared loop; build it, then call :meth:`run`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step_fn: Callable[[nn.Module, Any, torch.Generator], StepOutput]
    make_loader: Callable[[int], Iterable]
    """Returns the batches of one epoch; called with the epoch index."""
    steps_per_epoch: int
    loop: LoopConfig
    optim: OptimConfig
    env: Environment
    log: JsonlLog
    effective_batch: int
    on_epoch_end: Callable[[int, dict[str, float]], dict[str, float]] | None = None
    save: Callable[[Progress], None] | None = None
    desc: str = "train"
    trainable: list[nn.Parameter] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.loop.epochs is not None, "resolve the command's default epochs before building the loop"
        if not self.trainable:
            self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.base_lr = self.optim.absolute_lr(self.effective_batch)

    def _lr(self, epoch: int, it: int) -> float:
        return lr_at(
            epoch + it / self.steps_per_epoch, self.base_lr, self.optim.min_lr,
            self.optim.warmup_epochs, self.loop.epochs,
        )

    def run(self, progress: Progress) -> list[dict[str, float]]:
        """Train from ``progress.epoch`` to ``loop.epochs``; returns the epoch records."""
        history = []
        logger.info(
            "training %s: %d epochs x %d steps, effective batch %d, lr %.3g, device %s%s",
            self.desc, self.loop.epochs, self.steps_per_epoch, self.effective_batch, self.base_lr,
            self.env.device, f", autocast {self.env.amp_dtype}" if self.env.amp_dtype else "",
        )
        end = self.loop.epochs
        if self.loop.stop_after is not None:
            end = min(end, progress.epoch + self.loop.stop_after)
        while progress.epoch < end:
            record = self._epoch(progress)
            progress.epoch += 1
            if self.on_epoch_end is not None:
                record.update(self.on_epoch_end(progress.epoch - 1, record))
            self.log.write(record)
            history.append(record)
            last = progress.epoch == end
            if self.save is not None and (last or progress.epoch % self.loop.save_every == 0):
                self.save(progress)
        return history

    def _epoch(self, progress: Progress) -> dict[str, float]:
        epoch, accum = progress.epoch, self.loop.accum_iter
        seed_epoch(self.loop.seed, epoch)
        generator = torch.Generator(self.env.device).manual_seed(epoch_seed(self.loop.seed, epoch, "mask"))
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.env.device)
        metric_sums: dict[str, torch.Tensor] = {}
        seen = window_seen = 0
        start = window_start = time.perf_counter()
        lr = self._lr(epoch, 0)
        bar = tqdm(total=self.steps_per_epoch, desc=f"{self.desc} {epoch + 1}/{self.loop.epochs}",
                   disable=None if self.env.is_main else True, dynamic_ncols=True, leave=False)
        it, grad_norm = -1, None
        for it, batch in enumerate(self.make_loader(epoch)):
            if it % accum == 0:
                lr = self._lr(epoch, it)
                set_lr(self.optimizer, lr)
            with torch.autocast(self.env.device.type, dtype=self.env.amp_dtype or torch.float32,
                                enabled=self.env.amp_dtype is not None):
                out = self.step_fn(self.model, batch, generator)
            (out.loss / accum).backward()
            if (it + 1) % accum == 0 or it + 1 == self.steps_per_epoch:
                if self.optim.clip_grad is not None:
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.optim.clip_grad)
                elif (it + 1) % self.loop.log_every == 0:
                    grad_norm = total_grad_norm(self.trainable)  # only at log steps: it costs a pass over grads
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                progress.step += 1
            loss = out.loss.detach().float()
            # On a CPU the check is free; on a GPU it is deferred to log steps to avoid a sync per step.
            if self.env.device.type == "cpu" or (it + 1) % self.loop.log_every == 0:
                if not math.isfinite(float(loss)):
                    bar.close()
                    raise TrainingDiverged(
                        f"loss is {float(loss)} at epoch {epoch + 1}, iteration {it + 1}; lower the "
                        "learning rate (--blr), enable --clip-grad, or check the input data"
                    )
            loss_sum += loss
            for key, value in out.metrics.items():
                metric_sums[key] = metric_sums.get(key, 0) + value.detach().float()
            seen += out.batch_size
            window_seen += out.batch_size
            bar.update(1)
            if (it + 1) % self.loop.log_every == 0:
                now = time.perf_counter()
                rate = window_seen / max(now - window_start, 1e-9)
                window_start, window_seen = now, 0
                record = dict(event="step", epoch=epoch, iter=it + 1, step=progress.step,
                              loss=float(loss), lr=lr, img_per_s=rate)
                if grad_norm is not None:  # None when a log step falls between accumulation steps
                    record["grad_norm"], grad_norm = float(grad_norm), None
                self.log.write(record)
                remaining = (self.steps_per_epoch - it - 1) + (self.loop.epochs - epoch - 1) * self.steps_per_epoch
                bar.set_postfix(loss=f"{float(loss):.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}",
                                eta=_fmt_time(remaining * out.batch_size / max(rate, 1e-9)))
        bar.close()
        if it < 0:
            raise ValueError("the training data is empty: no batch was produced; check the dataset and --batch-size")
        elapsed = time.perf_counter() - start
        n = it + 1
        record = dict(event="epoch", epoch=epoch, step=progress.step, loss=float(loss_sum) / n, lr=lr,
                      img_per_s=seen / max(elapsed, 1e-9), epoch_time_s=elapsed)
        record.update({k: float(v) / n for k, v in metric_sums.items()})
        logger.info("%s epoch %d/%d: loss %.4f, %.0f img/s, %.1fs", self.desc, epoch + 1, self.loop.epochs,
                    record["loss"], record["img_per_s"], elapsed)
        return record


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
