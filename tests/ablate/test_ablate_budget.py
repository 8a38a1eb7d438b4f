"""``maelab ablate`` with time budgets: one key (``time_budget``) gives every cell the same pre-training time."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from maelab.ablate.config import parse_sweep
from maelab.ablate.runner import run_sweep
from maelab.train import budget

BASE = {"model": "debug", "data": {"dataset": "synthetic", "synthetic_size": 64}, "loop.batch_size": 16}
GRID = {"options.mask_ratio": [0.5, 0.75]}


def test_time_budget_is_one_key_for_every_cell():
    sweep = parse_sweep({"base": {**BASE, "time_budget": "10m"}, "grid": GRID})
    for cell in sweep.cells:
        assert cell.pretrain.time_budget == "10m" and cell.pretrain.loop.epochs is None
        assert cell.pretrain.optim.warmup_fraction == 0.1  # the default warmup of a planned schedule
    assert sweep.varying == ("options.mask_ratio",)


def test_cells_without_a_schedule_get_the_default_budget_and_may_vary_it():
    assert all(c.pretrain.time_budget == "10m" for c in parse_sweep({"base": BASE, "grid": GRID}).cells)
    sweep = parse_sweep({"base": BASE, "grid": {"time_budget": ["5m", "1h30m"]}})
    assert [c.pretrain.time_budget for c in sweep.cells] == ["5m", "1h30m"]
    assert [c.label for c in sweep.cells] == ["time_budget=5m", "time_budget=1h30m"]


def test_epochs_and_time_budget_exclude_each_other_per_cell():
    expected = r"cells\[time_budget=5m\].*--time-budget 5m and --epochs 1 exclude each other"
    with pytest.raises(ValueError, match=expected):
        parse_sweep({"base": {**BASE, "loop.epochs": 1}, "grid": {"time_budget": ["5m"]}})
    # A cell clears the base's epochs to take a budget instead.
    sweep = parse_sweep({"base": {**BASE, "loop.epochs": 1}, "cells": [
        {"name": "epoch"}, {"name": "budget", "loop.epochs": None, "time_budget": "10m"}]})
    assert [(c.pretrain.loop.epochs, c.pretrain.time_budget) for c in sweep.cells] == [(1, None), (None, "10m")]


@pytest.mark.parametrize(("value", "message"), [
    ("ten", "--time-budget 'ten' is not a duration"),
    (600, "time_budget: expected str, got 600"),
])
def test_bad_time_budget_fails_before_anything_trains(value, message):
    with pytest.raises(ValueError, match=message):
        parse_sweep({"base": {**BASE, "time_budget": value}, "grid": GRID})


def test_budgeted_sweep_trains_each_cell_to_its_plan(tmp_path, monkeypatch):
    """In process, with the plan fixed at 6 steps (1.5 epochs) and nothing measured: each cell's run records
    its plan, the table its fractional epochs."""
    monkeypatch.setattr(budget, "plan_steps", lambda available, spe, costs: 6)
    monkeypatch.setattr("maelab.train.budget.measure_costs", lambda *args, **kwargs: budget.Costs(step_s=0.01))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "budget", "base": {**BASE, "time_budget": "1m", "vis_every": 100},
                                    "grid": GRID, "eval": {"linprobe": False, "knn": {}}}))
    sweep_dir, failed = run_sweep(path, tmp_path / "out", isolate=False)
    assert failed == 0
    with (sweep_dir / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["pretrain_epochs"]) for row in rows] == [1.5, 1.5]
    for row in rows:
        config = json.loads((sweep_dir / "cells" / row["cell"] / "pretrain" / "config.json").read_text())
        assert config["time_budget"] == "1m" and config["loop"]["steps"] == config["plan"]["steps"] == 6
