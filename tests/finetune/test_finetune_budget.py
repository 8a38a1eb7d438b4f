"""``maelab finetune --time-budget``: the plan in config.json, the same run as its planned --steps, exact resume,
refusals."""

from __future__ import annotations

import json
import math

import pytest
from run_checks import assert_same_weights_and_log as assert_same_run
from run_checks import records

from maelab.cli import main
from maelab.train import budget


def _argv(pretrained_run, out, *extra):
    return ["finetune", "--checkpoint", str(pretrained_run), "--batch-size", "32", "--log-every", "1",
            "--device", "cpu", "--output-dir", str(out), *extra]


def _run_cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def _config(run):
    return json.loads((run / "config.json").read_text())


@pytest.fixture
def ten_steps(monkeypatch):
    """Every plan gets 10 optimizer steps, whatever the measurement found."""
    monkeypatch.setattr(budget, "plan_steps", lambda available, spe, costs: 10)


def test_budget_run_completes_its_schedule(pretrained_run, tmp_path, monkeypatch):
    """A real measurement (step, evaluation, checkpoints) and plan: the schedule ends at --min-lr, every epoch is
    evaluated, and config.json holds the plan. The planner's answer is raised to at least 4 steps so that a
    loaded machine still trains; that the answer fits what was left of the budget is asserted as found."""
    planned = []
    real = budget.plan_steps

    def at_least_four(available, spe, costs):
        planned.append((available, costs, n := real(available, spe, costs)))
        return max(n, 4)

    monkeypatch.setattr(budget, "plan_steps", at_least_four)
    run = tmp_path / "run"
    assert main(_argv(pretrained_run, run, "--time-budget", "8s", "--min-lr", "1e-5")) == 0
    [(available, costs, found)] = planned
    per_epoch = _config(run)["plan"]["steps_per_epoch"]
    assert found == 0 or found * costs.step_s + budget.outside_seconds(found, per_epoch, costs) <= available
    assert costs.step_s > 0 and costs.epoch_end[0].seconds > 0 and costs.save_s > 0  # all three were timed
    cfg = _config(run)
    steps = cfg["loop"]["steps"]
    assert cfg["time_budget"] == "8s" and cfg["loop"]["epochs"] is None and steps == cfg["plan"]["steps"]
    assert steps == max(found, 4) and cfg["optim"]["warmup_epochs"] == 1.0  # finetune's own warmup default
    log = records(run)
    step_records = [r for r in log if r["event"] == "step"]
    assert [r["step"] for r in step_records] == list(range(1, steps + 1))
    assert step_records[-1]["lr"] == pytest.approx(1e-5)
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["epochs"]) == math.ceil(steps / per_epoch) and metrics["selected_on"] == "val"
    assert _run_cli(["finetune", "--resume", str(run)]) == 2  # finished


def test_measurement_does_not_change_the_run(pretrained_run, tmp_path, ten_steps):
    """Measured on copies, then planned: the same weights, log and metrics as --steps with the plan's steps."""
    budgeted, fixed = tmp_path / "budgeted", tmp_path / "fixed"
    assert main(_argv(pretrained_run, budgeted, "--time-budget", "1m")) == 0
    assert _config(budgeted)["loop"]["steps"] == 10
    assert main(_argv(pretrained_run, fixed, "--steps", "10")) == 0
    assert_same_run(budgeted, fixed)
    epochs = [json.loads((run / "metrics.json").read_text())["epochs"] for run in (budgeted, fixed)]
    assert epochs[0] == epochs[1]


def test_stopped_budget_run_resumes_exactly_without_planning_again(pretrained_run, tmp_path, ten_steps,
                                                                  monkeypatch):
    straight, chunks = tmp_path / "straight", tmp_path / "chunks"
    monkeypatch.setattr(budget, "measure_costs", lambda *args, **kwargs: budget.Costs(step_s=0.01))
    assert main(_argv(pretrained_run, straight, "--time-budget", "1m")) == 0
    assert main(_argv(pretrained_run, chunks, "--time-budget", "1m", "--stop-after", "1")) == 0
    planned = _config(chunks)

    def no_measuring(*args, **kwargs):
        raise AssertionError("a resume must not measure or plan again")

    monkeypatch.setattr(budget, "measure_costs", no_measuring)
    assert main(["finetune", "--resume", str(chunks)]) == 0
    assert_same_run(straight, chunks)
    assert (_config(chunks)["plan"], _config(chunks)["loop"]["steps"]) == (planned["plan"], 10)  # replayed
    assert json.loads((chunks / "metrics.json").read_text())["epochs"] == \
        json.loads((straight / "metrics.json").read_text())["epochs"]


@pytest.mark.parametrize(("options", "expected"), [
    (["--time-budget", "soon"], "--time-budget 'soon' is not a duration"),
    (["--time-budget", "1m", "--epochs", "2"], "--time-budget 1m and --epochs 2 exclude each other"),
    (["--time-budget", "1m", "--steps", "5"], "--time-budget 1m and --steps 5 exclude each other"),
    (["--time-budget", "1m", "--fsdp"], "--fsdp needs a fixed schedule"),
    (["--time-budget", "0.001s"], "--time-budget 0.001s is too short here"),
])
def test_bad_budget_exits_2_before_writing(pretrained_run, tmp_path, capsys, options, expected):
    out = tmp_path / "out"
    assert _run_cli(_argv(pretrained_run, out, *options)) == 2
    err = " ".join(capsys.readouterr().err.split()).replace("│ ", "").replace(" │", "")
    assert expected in err, err
    assert not out.exists()
