"""``--resume RUN_DIR`` for every training command (pretrain, finetune, linprobe).

A command resumes in four calls, each shared here so the commands cannot drift apart:
:func:`open_resume` (the run's own config merged with the few options a resume may change,
its newest complete checkpoint, refusal of finished runs and of other commands' runs),
:func:`restore` (model, optimizer, position and the loop's mid-epoch state),
:func:`prepare_run_dir` (the run directory and log cut back to the checkpoint) and
:func:`run_loop` (the loop under :func:`~maelab.train.signals.graceful_stop`). Checkpoints are
written by :func:`save_point`; a command adds what only it carries (e.g. a classifier's
per-epoch evaluations) as ``extra`` and reads it back from :attr:`ResumePoint.state`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from maelab.checkpoint import CheckpointMeta, load_checkpoint, read_meta
from maelab.train.checkpoint_store import discard_after, find_resumable, remove_stale_temporaries, save_resumable
from maelab.train.config import from_jsonable, to_jsonable
from maelab.train.environment import Environment
from maelab.train.fsdp import (
    full_optimizer_state,
    is_sharded,
    load_model_state,
    load_optimizer_state,
    plain_state_dict,
)
from maelab.train.loop import TrainLoop
from maelab.train.rundir import JsonlLog, open_log, read_json, write_json
from maelab.train.signals import TrainingInterrupted, graceful_stop
from maelab.train.state import LoopState, Progress

logger = logging.getLogger(__name__)

Config = TypeVar("Config")

# Options of the shared loop (and data loading) that may differ when a run is resumed: none of them
# changes what is trained on or how. Everything else comes from the run itself.
LOOP_CHANGES = frozenset({
    ("loop", "epochs"), ("loop", "stop_after"), ("loop", "device"), ("loop", "log_every"), ("loop", "tensorboard"),
    ("loop", "save_every_steps"), ("loop", "keep_last"), ("loop", "on_nonfinite"), ("loop", "max_nonfinite"),
    ("data", "num_workers"), ("data", "max_bad_fraction"),
})


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def merge_resume(saved: Config, given: Config, allowed: frozenset[tuple[str, str]] = LOOP_CHANGES) -> Config:
    """The saved run config, with the options a resume may change (``allowed``: (section, field)) taken from ``given``.

    An option given with its default or its saved value is no change; any other given option
    raises ValueError naming it. ``loop.stop_after`` belongs to one invocation, never to the run.
    """
    default = type(given)()
    names = ", ".join(sorted({option_name(name) for section, name in allowed
                              if hasattr(getattr(given, section, given) if section else given, name)}))
    merged = saved
    for top in dataclasses.fields(given):
        part = getattr(given, top.name)
        if dataclasses.is_dataclass(part):
            pairs = [((top.name, f.name), getattr(part, f.name), getattr(getattr(default, top.name), f.name),
                      getattr(getattr(saved, top.name), f.name)) for f in dataclasses.fields(part)]
        else:
            pairs = [(("", top.name), part, getattr(default, top.name), getattr(saved, top.name))]
        for (section, name), value, default_value, saved_value in pairs:
            if value == default_value or value == saved_value:
                continue
            if (section, name) not in allowed:
                raise ValueError(f"{option_name(name)} cannot change when resuming: the run keeps its own "
                                 f"configuration (the run has {saved_value!r}; only {names} may change)")
            changed = ({section: dataclasses.replace(getattr(merged, section), **{name: value})}
                       if section else {name: value})
            merged = dataclasses.replace(merged, **changed)
    return dataclasses.replace(merged, loop=dataclasses.replace(merged.loop, stop_after=given.loop.stop_after))


def command_of(meta: CheckpointMeta) -> str:
    """The command that wrote a checkpoint: "pretrain", "finetune" or "linprobe"."""
    return "pretrain" if meta.kind == "mae" else str(meta.extra.get("command", meta.kind))


@dataclass
class ResumePoint:
    """The checkpoint a run continues from."""

    run_dir: Path
    weights: Path
    state: dict[str, Any]
    """The training state (:func:`save_point`'s ``train_state``)."""

    @property
    def progress(self) -> Progress:
        return Progress(epoch=self.state["epoch"], step=self.state["step"], iter=self.state.get("iter", 0))


def open_resume(
    run_dir: Path, given: Config, command: str, allowed: frozenset[tuple[str, str]] = LOOP_CHANGES,
) -> tuple[Config, ResumePoint]:
    """The config to continue ``run_dir`` with and its newest complete checkpoint.

    ValueError (nothing written) when the directory is no ``command`` run, has no usable
    checkpoint, or already finished its ``--epochs``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"--resume {run_dir}: no config.json there; pass a maelab {command} run directory")
    weights, state = find_resumable(run_dir)
    found = command_of(read_meta(weights))
    if found != command:
        raise ValueError(f"--resume {run_dir} is a maelab {found} run, not a {command} run; continue it with "
                         f"maelab {found} --resume {run_dir}")
    cfg = merge_resume(from_jsonable(type(given), read_json(run_dir / "config.json")), given, allowed)
    point = ResumePoint(run_dir, weights, state)
    if cfg.loop.steps is not None:
        if point.progress.step >= cfg.loop.steps:
            raise ValueError(f"run {run_dir} already finished its schedule of {cfg.loop.steps} optimizer steps; "
                             "start a new run to train longer")
        return cfg, point
    done = point.progress.epoch
    if done >= cfg.loop.epochs:
        raise ValueError(f"run {run_dir} already finished {done} epochs; pass --epochs N with N > {done} to train on")
    return cfg, point


def restore(
    point: ResumePoint, model: nn.Module, optimizer: torch.optim.Optimizer, env: Environment, dataset_size: int,
    stream_workers: int | None = None,
) -> tuple[Progress, LoopState]:
    """Load the checkpoint into ``model`` and ``optimizer``; returns where the loop continues and its state.

    ``model`` may be FSDP-sharded (a collective then); ``stream_workers``: :class:`~maelab.train.loader.TrainData`'s.
    """
    # A sharded model takes its shards from host memory, one tensor at a time: no device holds the whole model.
    weights, _ = load_checkpoint(point.weights, torch.device("cpu") if is_sharded(model) else env.device)
    load_model_state(model, weights)
    load_optimizer_state(model, optimizer, point.state["optimizer"])
    progress = point.progress
    loop_state = LoopState.from_state(point.state.get("loop") or {}, env.device)
    if loop_state.dataset_size and loop_state.dataset_size != dataset_size:
        raise ValueError(
            f"the training set has {dataset_size} images, but the run was trained on "
            f"{loop_state.dataset_size}; the data changed since the checkpoint, so the run cannot continue "
            "exactly. Restore the data, or start a new run"
        )
    if progress.iter and loop_state.stream_workers != stream_workers:
        raise ValueError(
            f"{point.weights.name} was saved mid-epoch reading shards with --num-workers {loop_state.stream_workers}; "
            "the stream's order depends on it, so continue with the same --num-workers "
            "(or from an epoch-end checkpoint)"
        )
    if progress.iter and loop_state.world_size != env.world_size:
        raise ValueError(
            f"{point.weights.name} was saved mid-epoch by {loop_state.world_size} process(es); continue it with "
            f"the same number (this run has {env.world_size}), or resume from an epoch-end checkpoint"
        )
    logger.info("resuming %s from %s: epoch %d, %d batches into it, optimizer step %d",
                point.run_dir, point.weights.name, progress.epoch + 1, progress.iter, progress.step)
    return progress, loop_state


def prepare_run_dir(run_dir: Path, cfg: Any, env: Environment, progress: Progress | None) -> JsonlLog:
    """Create (or, resuming from ``progress``, cut back) the run directory, write config.json; returns the log.

    On resume, checkpoints newer than ``progress`` and log records after it are dropped (also
    from TensorBoard), so the run appends exactly what an uninterrupted run would have written.
    """
    if env.is_main:  # the other ranks write nothing
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)
        if progress is not None:
            discard_after(run_dir, progress.step)
        write_json(run_dir / "config.json", to_jsonable(cfg))
    log = open_log(run_dir, cfg.loop.tensorboard and env.is_main,
                   purge_step=progress.step + 1 if progress is not None else None)
    if env.is_main and progress is not None:
        log.truncate_to(progress.epoch, progress.iter)
    return log


def save_point(
    run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, meta: CheckpointMeta, keep_last: int,
    progress: Progress, loop_state: LoopState, extra: dict[str, Any] | None = None, write: bool = True,
) -> None:
    """Write the resumable checkpoint of ``progress`` (weights, optimizer, position, loop state, ``extra``).

    An FSDP-sharded ``model`` is gathered whole (weights, and the optimizer state by parameter name), so
    the checkpoint loads on any world size: every rank calls this, only the one with ``write`` writes.
    """
    weights = plain_state_dict(model)
    optimizer_state = full_optimizer_state(model, optimizer) if is_sharded(model) else optimizer.state_dict()
    if not write:
        return
    train_state = {"optimizer": optimizer_state, "epoch": progress.epoch, "step": progress.step,
                   "iter": progress.iter, "loop": loop_state.state_dict(), **(extra or {})}
    save_resumable(run_dir, progress.step, weights, meta, train_state, keep_last)


def run_loop(loop: TrainLoop, progress: Progress, loop_state: LoopState | None, command: str, run_dir: Path) -> None:
    """Train with SIGTERM / SIGINT turned into save-and-stop; the interruption names the resume command."""
    with graceful_stop() as loop.stop:
        try:
            loop.run(progress, loop_state)
        except TrainingInterrupted as exc:
            hint = f"{exc}; continue with: maelab {command} --resume {run_dir}"
            raise TrainingInterrupted(exc.signum, hint) from None
