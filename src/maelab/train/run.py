"""One run setup for every training command (pretrain, finetune, linprobe).

A command states what it trains in a :class:`TrainSpec` (model, step, data, evaluation and
checkpoint hooks); :func:`open_run` and :func:`train` do the rest the same way for all of
them: a new run or ``--resume``, the checkpoint restored, the run directory and log
prepared, the shared :class:`~maelab.train.loop.TrainLoop` run under graceful stop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from maelab.train.environment import Environment
from maelab.train.loader import TrainData
from maelab.train.loop import EpochHook, StepFn, TrainLoop
from maelab.train.resume import LOOP_CHANGES, ResumePoint, open_resume, prepare_run_dir, restore, run_loop
from maelab.train.rundir import removed_if_failed_before_checkpoint
from maelab.train.state import LoopState, Progress

Config = TypeVar("Config")

# Options that belong to one invocation, never to the run, as (section, field), "" for a top-level field: how
# the steps are executed, not what they compute. A resume takes them from its own command line.
INVOCATION_ONLY = (("", "fsdp"), ("loop", "compile"))


def open_run(
    cfg: Config, resume: Path | None, command: str, default_epochs: int | None,
) -> tuple[Config, ResumePoint | None]:
    """The config to train with and, with ``resume``, the checkpoint to continue from.

    A new run gets the command's ``default_epochs`` unless ``--epochs`` or ``--steps`` says otherwise
    (None: the command plans the schedule itself, e.g. pretrain's ``--time-budget``), and its default
    warmup written out; a resumed run keeps its own config except the options a resume may change.
    """
    if resume is None:
        loop = cfg.loop
        if loop.epochs is None and loop.steps is None and default_epochs is not None:
            loop = dataclasses.replace(loop, epochs=default_epochs)
        optim = cfg.optim
        if loop.epochs is not None or loop.steps is not None:
            optim = optim.resolved(step_schedule=loop.steps is not None)
        return dataclasses.replace(cfg, loop=loop, optim=optim), None
    own = [(section, name) for section, name in INVOCATION_ONLY if hasattr(_section(cfg, section), name)]
    saved, point = open_resume(Path(resume), cfg, command, LOOP_CHANGES | frozenset(own))
    for section, name in own:
        value = getattr(_section(cfg, section), name)
        saved = dataclasses.replace(saved, **{section: dataclasses.replace(_section(saved, section), **{name: value})}
                                    if section else {name: value})
    return saved, point


def _section(cfg: Any, section: str) -> Any:
    return getattr(cfg, section) if section else cfg


def check_batch_size(num_images: int, batch_size: int) -> None:
    if num_images < batch_size:
        raise ValueError(f"the training set has {num_images} images, fewer than --batch-size {batch_size}; "
                         "lower --batch-size")


@dataclass
class TrainSpec:
    """What one command trains; everything else about the run is shared (:func:`train`)."""

    command: str
    cfg: Any
    """The command's config: its ``loop`` and ``optim`` drive the loop; written as config.json."""
    run_dir: Path
    env: Environment
    point: ResumePoint | None
    model: nn.Module
    """What the loop trains (and wraps in DDP): the whole model, or a probe's head."""
    optimizer: torch.optim.Optimizer
    step_fn: StepFn
    data: TrainData
    dataset_size: int
    save: Callable[[Progress, LoopState], None]
    on_epoch_end: EpochHook | None = None
    checkpointed: nn.Module | None = None
    """The module the checkpoint's weights belong to, when it is not ``model`` (a probe saves the whole classifier)."""
    on_restore: Callable[[dict[str, Any]], None] | None = None
    """Reads the command's own part of a resumed checkpoint's training state."""
    sharded: bool = False


def train(spec: TrainSpec) -> None:
    """Restore (on resume), prepare the run directory, and run the shared loop to the end of the schedule."""
    progress, loop_state = Progress(), None
    if spec.point is not None:
        progress, loop_state = restore(spec.point, spec.checkpointed or spec.model, spec.optimizer, spec.env,
                                       spec.dataset_size, spec.data.stream_workers)
        if spec.on_restore is not None:
            spec.on_restore(spec.point.state)
    # A new run that fails before its first checkpoint leaves nothing behind, so the same command can run again.
    with removed_if_failed_before_checkpoint(spec.run_dir, spec.point is None and spec.env.is_main):
        _run(spec, progress, loop_state)


def _run(spec: TrainSpec, progress: Progress, loop_state: LoopState | None) -> None:
    log = prepare_run_dir(spec.run_dir, spec.cfg, spec.env, progress if spec.point is not None else None)
    loop_cfg = spec.cfg.loop
    loop = TrainLoop(
        model=spec.model, optimizer=spec.optimizer, step_fn=spec.step_fn, make_loader=spec.data.make,
        steps_per_epoch=spec.data.steps, loop=loop_cfg, optim=spec.cfg.optim, env=spec.env, log=log,
        effective_batch=loop_cfg.batch_size * loop_cfg.accum_iter * spec.env.world_size,
        on_epoch_end=spec.on_epoch_end, save=spec.save, desc=spec.command, dataset_size=spec.dataset_size,
        stream_workers=spec.data.stream_workers, sharded=spec.sharded,
    )
    run_loop(loop, progress, loop_state, spec.command, spec.run_dir)
