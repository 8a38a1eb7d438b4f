"""The one training spine of pretrain, finetune and linprobe: a trainer with pluggable builders (torchtitan's
shape).

A command says what it trains by filling a :class:`TrainingBuilders` with its own pieces (dataset, model,
optimizer, step, the work --time-budget times, the epoch-end and checkpoint hooks); :func:`run_training` runs
the rest in one order for every command: open the run (new or --resume), the environment, the dataset, the
batch and launch checks, the step, the seeded loader, the run directory every rank agrees on, the model
(sharded or moved by the model builder), the optimizer, the --time-budget plan, the shared loop
(:func:`maelab.train.run.train`), the command's finish and the budget's end. A new training command is a page
of builders.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from maelab.train.budget import EpochWork, log_budget_end, plan_budget
from maelab.train.distributed import agree
from maelab.train.environment import Environment, setup_environment
from maelab.train.fsdp import check_launch
from maelab.train.loader import TrainData, train_loader
from maelab.train.loop import EpochHook, StepFn
from maelab.train.resume import ResumePoint
from maelab.train.run import TrainSpec, check_batch_size, open_run, train
from maelab.train.rundir import new_run_dir
from maelab.train.state import LoopState, Progress


@dataclass(frozen=True)
class TrainingData:
    """What the dataset builder found: the training images and what the command's other builders need."""

    cfg: Any
    """The config the run trains with (the builder may fill in defaults: pretrain's model name, --init's hash)."""
    train_set: Dataset
    run_name: str
    """A new run directory's stem (runs/<run_name>-<time>)."""
    num_workers: int = 0
    collate: Callable | None = None
    context: Any = None
    """The command's own results (data config, dataset info, encoder source, ...), read by its other builders."""


@dataclass(frozen=True)
class Built:
    """The model builder's result: the module the loop trains, and the one checkpoints hold when that differs
    (a probe trains its head and saves the whole classifier)."""

    trained: nn.Module
    checkpointed: nn.Module | None = None


TimedWork = tuple[list[tuple[EpochWork, int]], EpochWork]
"""What --time-budget times besides the step: (epoch-end work with its every-N-epochs, a checkpoint)."""


@dataclass(frozen=True)
class RunHooks:
    """What the run does around the loop's steps."""

    save: Callable[[Progress, LoopState], None]
    """Write the resumable checkpoint at a point of the schedule."""
    on_epoch_end: EpochHook | None = None
    on_restore: Callable[[dict[str, Any]], None] | None = None
    """Reads the command's own part of a resumed checkpoint's training state."""
    finish: Callable[[], None] | None = None
    """After the last step (final metrics, a closing log line)."""


@dataclass(frozen=True)
class TrainingBuilders:
    """One training command's pieces; :func:`run_training` calls them in the spine's order."""

    command: str
    default_epochs: int | None
    """A new run's --epochs when neither --epochs nor --steps is given (None: the command plans it)."""
    dataset: Callable[[Any, ResumePoint | None, Environment], TrainingData]
    model: Callable[[Any, TrainingData, Environment, ResumePoint | None], Built]
    """Builds, initializes and shards (or moves to the device) the model."""
    optimizer: Callable[[Any, nn.Module], torch.optim.Optimizer]
    """Over a module as :attr:`Built.trained` (also the budget measurement's copy of it)."""
    step: Callable[[Any, TrainingData, Environment], StepFn]
    hooks: Callable[[Any, TrainingData, Environment, Path, Built, torch.optim.Optimizer, TrainData], RunHooks]
    """Built after the --time-budget plan, with the config it wrote."""
    timed_work: Callable[[Any, TrainingData, Environment, Built], TimedWork] | None = None
    """What --time-budget times besides the step; None for a command without --time-budget."""


def run_training(cfg: Any, resume: Path | None, builders: TrainingBuilders) -> Path:
    """Train (or continue the run in ``resume``) as ``builders`` say; returns the run directory.

    A new run with --time-budget (counted from here) has its steps planned once everything is built."""
    started = time.monotonic()
    cfg, point = open_run(cfg, resume, builders.command, builders.default_epochs)
    env = setup_environment(cfg.loop)
    data = builders.dataset(cfg, point, env)
    cfg = data.cfg
    check_batch_size(len(data.train_set), cfg.loop.batch_size)
    fsdp = bool(getattr(cfg, "fsdp", False))
    check_launch(fsdp, env.world_size, builders.command)
    step = builders.step(cfg, data, env)
    loader = train_loader(data.train_set, cfg.loop.batch_size, cfg.loop.seed, env, data.num_workers, data.collate)
    run_dir = agree(point.run_dir if point is not None else new_run_dir(cfg.output_dir, data.run_name))
    built = builders.model(cfg, data, env, point)
    optimizer = builders.optimizer(cfg, built.trained)  # after sharding, which replaces the parameters
    budgeted = point is None and getattr(cfg, "time_budget", None) is not None
    if budgeted:
        assert builders.timed_work is not None, f"{builders.command} has --time-budget but no timed work"
        cfg = plan_budget(cfg, started, built.trained, lambda m: builders.optimizer(cfg, m), step, loader, env,
                          *builders.timed_work(cfg, data, env, built))
    hooks = builders.hooks(cfg, data, env, run_dir, built, optimizer, loader)
    train(TrainSpec(
        command=builders.command, cfg=cfg, run_dir=run_dir, env=env, point=point, model=built.trained,
        optimizer=optimizer, step_fn=step, data=loader, dataset_size=len(data.train_set), save=hooks.save,
        on_epoch_end=hooks.on_epoch_end, checkpointed=built.checkpointed, on_restore=hooks.on_restore,
        sharded=fsdp,
    ))
    if hooks.finish is not None:
        hooks.finish()
    if budgeted:
        log_budget_end(cfg, started)
    return run_dir
