"""Time-budgeted training: ``--time-budget`` parsed, the run's costs measured, its optimizer steps planned.

A budget is spent on three things: what happens before training (loading the data, building the
model, measuring), the optimizer steps, and what happens around them (each epoch's loader start,
the epoch-end pictures and evaluations, checkpoints). :func:`measure_costs` times each of them with
the run's own data loader, step and loop on throw-away copies of the model and optimizer, under
preserved RNG states, so the run itself trains exactly as it would have without the measurement.
:func:`plan_steps` (pure) then finds the most optimizer steps whose whole schedule, with everything
around it, fits the time that is left; :func:`make_plan` records how (config.json's ``plan``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from maelab.train.config import LoopConfig, OptimConfig
from maelab.train.distributed import agree
from maelab.train.environment import Environment
from maelab.train.loader import TrainData, preserved_rngs
from maelab.train.loop import StepFn, TrainLoop
from maelab.train.rundir import JsonlLog, open_log
from maelab.train.state import Progress

logger = logging.getLogger(__name__)

PROBE_WARMUP_STEPS = 2
"""Optimizer steps run before the timing starts (first-call allocations, lazy initialization)."""
PROBE_TIMED_STEPS = 5
"""Optimizer steps timed; their mean is the planned step time."""
MIN_PLANNED_STEPS = 2
"""The fewest steps a plan may have: the schedule's first step (lr 0) and its last (--min-lr)."""

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?")

Budgeted = TypeVar("Budgeted")
"""A command's config with ``time_budget``, ``plan``, ``loop`` and ``optim`` (pretrain's, finetune's)."""

EpochWork = Callable[[nn.Module, torch.optim.Optimizer, JsonlLog], None]
"""Work a run does between optimizer steps (pictures, an evaluation, a checkpoint), applied here to
the measurement's model and optimizer copies; ``log`` is a log in a throw-away directory to write into."""


def parse_duration(text: str, flag: str = "--time-budget") -> float:
    """Seconds in ``90s``, ``10m``, ``1.5h`` or ``1h30m`` (hours, minutes, seconds, in this order).

    ValueError naming ``flag`` for anything else, and for a budget of 0."""
    match = _DURATION.fullmatch(text.strip().lower().replace(" ", ""))
    if match is None or not any(match.groups()):
        raise ValueError(f"{flag} {text!r} is not a duration; give a number with a unit, e.g. 90s, 10m, 1.5h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise ValueError(f"{flag} {text!r}: the budget must be longer than 0 seconds")
    return total


@dataclass(frozen=True)
class EpochEndCost:
    """Seconds paid at every ``every``-th epoch end and at the last one (pictures, kNN, an epoch's checkpoint)."""

    seconds: float
    every: int = 1


@dataclass(frozen=True)
class Costs:
    """What a run spends its time on, in seconds (measured by :func:`measure_costs`)."""

    step_s: float
    """One optimizer step in steady state: its batches' loading, forward, backward and update."""
    epoch_start_s: float = 0.0
    """Each epoch: from asking the loader for its batches to the first one (worker start, first batch)."""
    epoch_end: tuple[EpochEndCost, ...] = ()
    save_s: float = 0.0
    """One mid-epoch checkpoint, written every ``save_every_steps`` optimizer steps (None: never)."""
    save_every_steps: int | None = None


def paid_epochs(epochs: int, every: int) -> int:
    """Epoch ends among ``epochs`` that pay a cost due every ``every`` epochs and at the last."""
    return epochs // every + (1 if epochs % every else 0)


def outside_seconds(steps: int, steps_per_epoch: int, costs: Costs) -> float:
    """Seconds a schedule of ``steps`` optimizer steps (``steps_per_epoch`` to an epoch) spends outside its steps."""
    if steps <= 0:
        return 0.0
    epochs = math.ceil(steps / steps_per_epoch)
    seconds = epochs * costs.epoch_start_s + sum(c.seconds * paid_epochs(epochs, c.every) for c in costs.epoch_end)
    if costs.save_every_steps is not None:
        seconds += steps // costs.save_every_steps * costs.save_s  # an upper bound: some fall on epoch ends
    return seconds


def plan_steps(available_s: float, steps_per_epoch: int, costs: Costs) -> int:
    """The most optimizer steps N with ``N * step_s + outside_seconds(N)`` within ``available_s`` (0 if none fit)."""
    if costs.step_s <= 0:
        raise ValueError(f"the measured step time must be positive; got {costs.step_s}")
    if available_s <= 0:
        return 0

    def fits(n: int) -> bool:
        return n * costs.step_s + outside_seconds(n, steps_per_epoch, costs) <= available_s

    low, high = 0, math.floor(available_s / costs.step_s)  # fits(low); nothing above high fits
    while low < high:  # both terms grow with n: bisect for the last n that fits
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


@dataclass(frozen=True)
class BudgetPlan:
    """How a ``--time-budget`` run's schedule was planned; config.json records it, and ``--resume`` replays
    ``steps`` (it is never planned again)."""

    budget_s: float
    setup_s: float
    """Spent before the plan was made: loading the data, building the model, measuring."""
    step_s: float
    """Measured seconds per optimizer step."""
    epoch_start_s: float
    """Measured seconds from asking for an epoch's batches to the first one."""
    epoch_end_s: float
    """Measured seconds of one epoch end doing all its work (pictures, kNN, checkpoint)."""
    reserved_s: float
    """Planned for what happens outside the optimizer steps over the whole schedule."""
    steps: int
    """Optimizer steps of the schedule (the run's --steps)."""
    steps_per_epoch: int
    """Optimizer steps per epoch."""
    epochs: float
    """``steps / steps_per_epoch``: the last epoch is cut short where the steps run out."""
    planned_s: float
    """The expected wall time: ``setup_s + steps * step_s + reserved_s``."""


def make_plan(budget: str, setup_s: float, steps_per_epoch: int, costs: Costs) -> BudgetPlan:
    """Plan the optimizer steps that fit what is left of ``budget`` after ``setup_s``; ValueError when too few do."""
    budget_s = parse_duration(budget)
    steps = plan_steps(budget_s - setup_s, steps_per_epoch, costs)
    if steps < MIN_PLANNED_STEPS:
        need = setup_s + MIN_PLANNED_STEPS * costs.step_s + outside_seconds(MIN_PLANNED_STEPS, steps_per_epoch, costs)
        raise ValueError(
            f"--time-budget {budget} is too short here: {setup_s:.1f} s went to loading and measuring, an optimizer "
            f"step takes {costs.step_s:.3g} s and the work around the steps "
            f"{outside_seconds(1, steps_per_epoch, costs):.3g} s per epoch; give at least {math.ceil(need * 1.1)}s, "
            "or a fixed schedule with --epochs or --steps"
        )
    reserved = outside_seconds(steps, steps_per_epoch, costs)
    return BudgetPlan(
        budget_s=budget_s, setup_s=setup_s, step_s=costs.step_s, epoch_start_s=costs.epoch_start_s,
        epoch_end_s=sum(c.seconds for c in costs.epoch_end), reserved_s=reserved, steps=steps,
        steps_per_epoch=steps_per_epoch, epochs=steps / steps_per_epoch,
        planned_s=setup_s + steps * costs.step_s + reserved,
    )


def check_time_budget(time_budget: str | None, plan: BudgetPlan | None, loop: LoopConfig, fsdp: bool = False) -> None:
    """ValueError unless ``--time-budget`` is a duration that no ``--epochs`` / ``--steps`` contradicts (a run
    resumed from its config has its plan's steps as ``--steps``) and, on a new run, ``--fsdp`` is off: the
    measurement copies the model, which a sharded one cannot do yet."""
    if time_budget is None:
        return
    parse_duration(time_budget)
    if loop.epochs is not None:
        raise ValueError(f"--time-budget {time_budget} and --epochs {loop.epochs} exclude each other: give one "
                         "(--epochs N trains N epochs however long they take)")
    if loop.steps is not None and (plan is None or plan.steps != loop.steps):
        raise ValueError(f"--time-budget {time_budget} and --steps {loop.steps} exclude each other: give one "
                         "(--time-budget plans the steps)")
    if fsdp and plan is None:
        raise ValueError("--fsdp needs a fixed schedule (--epochs or --steps): --time-budget times the step on a "
                         "copy of the model, which a sharded model cannot make yet")


def plan_budget(cfg: Budgeted, started: float, model: nn.Module,
                make_optimizer: Callable[[nn.Module], torch.optim.Optimizer], step_fn: StepFn, data: TrainData,
                env: Environment, epoch_end: Sequence[tuple[EpochWork, int]], checkpoint: EpochWork) -> Budgeted:
    """``cfg`` (a command's config with ``time_budget``, ``plan``, ``loop`` and ``optim``) with ``--steps`` planned
    to fill what is left of its --time-budget since ``started`` (time.monotonic()), and the plan that says how.

    The costs are measured on copies of ``model`` and of its optimizer (:func:`measure_costs`: the step, and
    ``epoch_end`` and ``checkpoint`` work); on several ranks, rank 0's plan is every rank's."""
    loop = cfg.loop
    costs = measure_costs(model, make_optimizer, step_fn, data, loop, cfg.optim, env,
                          loop.batch_size * loop.accum_iter * env.world_size, epoch_end, checkpoint)
    steps_per_epoch = math.ceil(data.steps / loop.accum_iter)
    plan = agree(make_plan(cfg.time_budget, time.monotonic() - started, steps_per_epoch, costs))
    logger.info("--time-budget %s: %d optimizer steps (%.2f epochs of %d) at %.3g s each, %.0f s reserved around "
                "them, %.0f s of setup and measuring; expected to end after %.0f s", cfg.time_budget, plan.steps,
                plan.epochs, plan.steps_per_epoch, plan.step_s, plan.reserved_s, plan.setup_s, plan.planned_s)
    return dataclasses.replace(cfg, loop=dataclasses.replace(loop, steps=plan.steps), plan=plan)


def log_budget_end(cfg: Budgeted, started: float) -> None:
    """Log how the planned end compares with the actual one (a new --time-budget run's last line)."""
    if cfg.plan is not None:
        logger.info("--time-budget %s: planned to end after %.0f s, ended after %.0f s", cfg.time_budget,
                    cfg.plan.planned_s, time.monotonic() - started)


@dataclass
class _Clock:
    """Timestamps of the measurement: the first loader request, the step calls, the end."""

    device: torch.device
    timed_from: int
    """The step call (micro-batch) the timed window starts at."""
    requested: float | None = None
    first: float | None = None
    timed: float | None = None
    calls: int = 0

    def now(self) -> float:
        _synchronize(self.device)
        return time.perf_counter()

    def loader(self, make: Callable) -> Callable:
        def make_timed(epoch: int, start: int = 0):
            if self.requested is None:
                self.requested = time.perf_counter()
            return make(epoch, start)

        return make_timed

    def step(self, step_fn: StepFn) -> StepFn:
        def step_timed(model, batch, generator):
            if self.first is None:
                self.first = time.perf_counter()
            if self.calls == self.timed_from:
                self.timed = self.now()  # the device has finished the warm-up steps
            self.calls += 1
            return step_fn(model, batch, generator)

        return step_timed


def measure_costs(
    model: nn.Module, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer], step_fn: StepFn,
    data: TrainData, loop: LoopConfig, optim: OptimConfig, env: Environment, effective_batch: int,
    epoch_end: Sequence[tuple[EpochWork, int]] = (), save: EpochWork | None = None,
) -> Costs:
    """Time the run's step, loader start and ``epoch_end`` work (each with how often it recurs, in epochs) and
    ``save`` (a checkpoint, at every ``loop.save_every``-th epoch end and every ``loop.save_every_steps`` steps).

    The steps are the shared loop's own (same batch size, device, autocast, accumulation, data loader with
    its augmentation): :data:`PROBE_WARMUP_STEPS` + :data:`PROBE_TIMED_STEPS` optimizer steps of a
    :class:`TrainLoop` on a deep copy of ``model`` and a fresh optimizer from ``make_optimizer``. Every RNG
    (torch CPU and CUDA, numpy, python) is restored afterwards and ``model`` is not touched. On several
    ranks every rank must call this (the copy is trained data-parallel, as the run will be).
    """
    steps = PROBE_WARMUP_STEPS + PROBE_TIMED_STEPS
    logger.info("timing the training step: %d warm-up + %d timed optimizer steps on a copy of the model",
                PROBE_WARMUP_STEPS, PROBE_TIMED_STEPS)
    clock = _Clock(env.device, timed_from=PROBE_WARMUP_STEPS * loop.accum_iter)
    probe = dataclasses.replace(loop, epochs=None, steps=steps, stop_after=None, save_every_steps=None)
    with _preserved_rngs(), _quiet("maelab.train.loop"), tempfile.TemporaryDirectory(prefix="maelab-timing-") as tmp:
        twin = copy.deepcopy(model)
        optimizer = make_optimizer(twin)
        log = open_log(Path(tmp), loop.tensorboard and env.is_main)  # also pays TensorBoard's import up front
        try:
            TrainLoop(model=twin, optimizer=optimizer, step_fn=clock.step(step_fn), make_loader=clock.loader(data.make),
                      steps_per_epoch=data.steps, loop=probe, optim=optim, env=env, log=log,
                      effective_batch=effective_batch, desc="timing").run(Progress())
            end = clock.now()
            assert clock.requested is not None and clock.first is not None and clock.timed is not None
            step_s = (end - clock.timed) / PROBE_TIMED_STEPS
            ends = tuple(EpochEndCost(_timed(work, twin, optimizer, log, env.device), every)
                         for work, every in epoch_end)
            save_s = _timed(save, twin, optimizer, log, env.device) if save is not None else 0.0
        finally:
            if log.mirror is not None:
                log.mirror.close()
    if save is not None:
        ends += (EpochEndCost(save_s, loop.save_every),)
    costs = Costs(step_s=step_s, epoch_start_s=clock.first - clock.requested, epoch_end=ends, save_s=save_s,
                  save_every_steps=loop.save_every_steps)
    logger.info("measured: %.3g s per optimizer step, %.3g s per epoch start, %.3g s per epoch end%s", costs.step_s,
                costs.epoch_start_s, sum(c.seconds for c in ends), f", {save_s:.3g} s per checkpoint" if save else "")
    return costs


def _timed(work: EpochWork, model: nn.Module, optimizer: torch.optim.Optimizer, log: JsonlLog,
           device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    work(model, optimizer, log)
    _synchronize(device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # queued kernels, as on CUDA: time them, not their launch
        torch.mps.synchronize()


@contextmanager
def _preserved_rngs() -> Iterator[None]:
    """Restore the torch (CPU and CUDA), numpy and python RNG states after the body."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        with preserved_rngs():
            yield
    finally:
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only warnings and errors from logger ``name`` (the measurement's loop would announce itself as a run)."""
    target = logging.getLogger(name)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)
