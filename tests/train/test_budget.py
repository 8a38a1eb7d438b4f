"""Time budgets: durations, the step planner (a pure function of measured costs), a schedule in optimizer
steps on the shared loop, and the measurement leaving the model and every RNG as it found them."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from maelab.train.budget import (
    MIN_PLANNED_STEPS,
    Costs,
    EpochEndCost,
    make_plan,
    measure_costs,
    outside_seconds,
    paid_epochs,
    parse_duration,
    plan_steps,
)
from maelab.train.config import LoopConfig, OptimConfig
from maelab.train.environment import Environment
from maelab.train.loader import TrainData, make_loader_fn
from maelab.train.loop import StepOutput, TrainLoop
from maelab.train.optim import lr_at
from maelab.train.rundir import JsonlLog
from maelab.train.state import LoopState, Progress

CPU = Environment(torch.device("cpu"))


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1.5h", 5400), ("1h30m", 5400), ("2m30s", 150), ("1h0m5s", 3605), (" 10M ", 600),
    ("0.5s", 0.5), (".5m", 30),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "", "m", "ten minutes", "10min", "30s1m", "1h1h", "-5m", "0s", "0h0m", "1d"])
def test_parse_duration_refuses_with_the_flag_named(text):
    with pytest.raises(ValueError, match="--time-budget"):
        parse_duration(text)


def test_paid_epochs_and_outside_seconds():
    assert [paid_epochs(n, 2) for n in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 3]  # every 2nd epoch end and the last
    costs = Costs(step_s=1.0, epoch_start_s=0.5, epoch_end=(EpochEndCost(2.0), EpochEndCost(10.0, every=3)),
                  save_s=0.25, save_every_steps=4)
    # 25 steps of 10 per epoch: 3 epochs (the last partial), pictures at all 3 ends, kNN at the 3rd only,
    # 6 mid-epoch checkpoints at most.
    assert outside_seconds(25, 10, costs) == 3 * 0.5 + 3 * 2.0 + 1 * 10.0 + 6 * 0.25
    assert outside_seconds(0, 10, costs) == 0.0


def _fits(n: int, available: float, spe: int, costs: Costs) -> bool:
    return n * costs.step_s + outside_seconds(n, spe, costs) <= available


@pytest.mark.parametrize("seed", range(40))
def test_planned_steps_are_the_most_that_fit(seed):
    """For injected step times and overheads, the plan fits the budget and one step more would not."""
    rng = random.Random(seed)
    spe = rng.choice([1, 3, 12, 234, 1000])
    costs = Costs(
        step_s=rng.uniform(0.001, 2.0), epoch_start_s=rng.uniform(0, 5),
        epoch_end=(EpochEndCost(rng.uniform(0, 20), rng.choice([1, 2, 5])), EpochEndCost(rng.uniform(0, 3))),
        save_s=rng.uniform(0, 1), save_every_steps=rng.choice([None, 7, 500]),
    )
    available = rng.uniform(0, 3600)
    n = plan_steps(available, spe, costs)
    assert n == 0 or _fits(n, available, spe, costs)
    assert not _fits(n + 1, available, spe, costs)


def test_plan_steps_without_overheads_is_the_budget_over_the_step_time():
    assert plan_steps(600.0, 234, Costs(step_s=0.7)) == math.floor(600 / 0.7)
    assert plan_steps(-1.0, 234, Costs(step_s=0.7)) == 0
    with pytest.raises(ValueError, match="step time"):
        plan_steps(10.0, 10, Costs(step_s=0.0))


def test_make_plan_records_the_schedule():
    costs = Costs(step_s=0.7, epoch_start_s=0.1, epoch_end=(EpochEndCost(3.0),), save_s=0.2)
    plan = make_plan("10m", 12.0, 234, costs)
    assert plan.budget_s == 600 and plan.setup_s == 12.0 and plan.step_s == 0.7
    assert plan.epochs == plan.steps / 234 and plan.steps_per_epoch == 234
    assert plan.reserved_s == outside_seconds(plan.steps, 234, costs)
    assert plan.planned_s == pytest.approx(12.0 + plan.steps * 0.7 + plan.reserved_s)
    assert plan.planned_s <= 600 < plan.planned_s + 0.7 + 3.2  # one more step (or epoch end) would not fit


def test_make_plan_refuses_a_budget_too_short():
    with pytest.raises(ValueError, match="--time-budget 5s is too short here") as info:
        make_plan("5s", 4.0, 10, Costs(step_s=1.0))
    assert "give at least" in str(info.value)
    assert make_plan("5s", 2.0, 10, Costs(step_s=1.0)).steps == 3 >= MIN_PLANNED_STEPS


def _loop(tmp_path, steps: int, accum: int = 1, save_every_steps: int | None = None) -> tuple[TrainLoop, list]:
    """A linear model on 40 samples, batch 4 (10 batches per epoch), scheduled in optimizer steps."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    data = TensorDataset(torch.randn(40, 4), torch.arange(40))
    saves: list[Progress] = []

    def step(net, batch, generator):
        return StepOutput(loss=net(batch[0]).pow(2).mean(), batch_size=batch[0].shape[0])

    loop = TrainLoop(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), step_fn=step,
        make_loader=make_loader_fn(data, 4, 0, CPU, 0), steps_per_epoch=10,
        loop=LoopConfig(steps=steps, batch_size=4, accum_iter=accum, log_every=1, save_every_steps=save_every_steps),
        optim=OptimConfig(lr=0.5, min_lr=0.01, warmup_fraction=0.2), env=CPU, log=JsonlLog(tmp_path / "log.jsonl"),
        effective_batch=4 * accum, save=lambda p, state: saves.append(Progress(p.epoch, p.step, p.iter)),
    )
    return loop, saves


@pytest.mark.parametrize(("steps", "accum"), [(23, 1), (7, 2), (20, 1), (3, 1)])
def test_step_schedule_ends_mid_epoch_at_min_lr(tmp_path, steps, accum):
    """``steps`` optimizer steps: the last epoch ends where they run out, with its record and checkpoint;
    warmup then cosine span exactly the steps: lr 0 at the first, --min-lr at the last."""
    loop, saves = _loop(tmp_path, steps, accum)
    history = loop.run(Progress())
    per_epoch = math.ceil(10 / accum)
    assert len(history) == math.ceil(steps / per_epoch) == loop.epochs
    assert [r["step"] for r in history] == [min((e + 1) * per_epoch, steps) for e in range(loop.epochs)]
    records = JsonlLog(tmp_path / "log.jsonl").records()
    logged = [r for r in records if r["event"] == "step" and r["iter"] % accum == 0]
    assert [r["step"] for r in logged] == list(range(1, steps + 1))
    warmup = 0.2 * (steps - 1)
    assert [r["lr"] for r in logged] == [lr_at(k, 0.5, 0.01, warmup, steps - 1) for k in range(steps)]
    assert logged[0]["lr"] == 0.0 and logged[-1]["lr"] == 0.01 and history[-1]["lr"] == 0.01
    assert saves[-1] == Progress(epoch=loop.epochs, step=steps, iter=0)  # the final checkpoint, after the last step


def test_step_schedule_saves_every_n_steps_and_stops_after_epochs(tmp_path):
    loop, saves = _loop(tmp_path, 23, save_every_steps=4)
    loop.loop = LoopConfig(steps=23, batch_size=4, log_every=1, save_every_steps=4, stop_after=2)
    history = loop.run(Progress())
    assert [r["step"] for r in history] == [10, 20]  # --stop-after 2 epochs of the 3-epoch schedule
    mid = [p.step for p in saves if p.iter]
    assert mid == [4, 8, 12, 16]
    assert saves[-1] == Progress(epoch=2, step=20, iter=0)


def test_step_schedule_resumed_with_another_epoch_length_says_so_and_still_ends_at_its_step(tmp_path, caplog):
    """Epoch 1 of 23 steps ran on 2 ranks in 5 steps (effective batch 8); one process continues with 10 steps
    per epoch (batch 4): the schedule counts the steps the run took, so it still ends at step 23 at --min-lr."""
    loop, saves = _loop(tmp_path, 23)
    with caplog.at_level("WARNING", logger="maelab.train.loop"):
        history = loop.run(Progress(epoch=1, step=5), LoopState(world_size=2, steps_per_epoch=5))
    assert [r["step"] for r in history] == [15, 23] and loop.epochs == 3
    logged = [r for r in JsonlLog(tmp_path / "log.jsonl").records() if r["event"] == "step"]
    assert [r["step"] for r in logged] == list(range(6, 24))
    assert [r["lr"] for r in logged] == [lr_at(k, 0.5, 0.01, 0.2 * 22, 22) for k in range(5, 23)]
    assert logged[-1]["lr"] == 0.01 and saves[-1] == Progress(epoch=3, step=23, iter=0)
    resized = [r for r in JsonlLog(tmp_path / "log.jsonl").records() if r["event"] == "resize"]
    assert resized == [dict(event="resize", epoch=1, step=5, world_size=1, saved_world_size=2, effective_batch=4,
                            saved_effective_batch=8, steps_per_epoch=10, saved_steps_per_epoch=5)]
    assert "an epoch is 10 optimizer steps (was 5); the lr schedule still ends at optimizer step 23" in caplog.text


def test_measurement_leaves_model_and_rngs_untouched():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = TensorDataset(torch.randn(64, 8), torch.arange(64))
    train_data = TrainData(make_loader_fn(data, 8, 0, CPU, 0), 8, None)
    ran: list[str] = []

    def step(net, batch, generator):
        noise = torch.rand(batch[0].shape[0], generator=generator)  # the mask generator, as MAE draws masks
        np.random.rand(), random.random()  # the global RNGs a step may use (mixup, ...)
        return StepOutput(loss=(net(batch[0]).squeeze(1) * noise).pow(2).mean(), batch_size=batch[0].shape[0])

    rng_before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    costs = measure_costs(
        model, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3), step, train_data,
        LoopConfig(epochs=1, batch_size=8, save_every=2), OptimConfig(), CPU, 8,
        epoch_end=[(lambda m, opt, log: ran.append("pictures"), 1)],
        save=lambda m, opt, log: ran.append("save"),
    )
    assert ran == ["pictures", "save"]
    assert costs.step_s > 0 and costs.epoch_start_s > 0
    assert [c.every for c in costs.epoch_end] == [1, 2]  # the pictures, then the checkpoint (--save-every 2)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(torch.get_rng_state(), rng_before[0])
    assert np.array_equal(np.random.get_state()[1], rng_before[1]) and random.getstate() == rng_before[2]
