"""``maelab pretrain --time-budget``: the plan in config.json, a complete schedule, exact resume, refusals."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
from run_checks import assert_same_weights_and_log as assert_same_run
from run_checks import records

from maelab.checkpoint import load_train_state
from maelab.cli import main
from maelab.pretrain.config import PretrainConfig, check_fsdp_schedule, with_default_schedule
from maelab.train import budget
from maelab.train.checkpoint_store import numbered_checkpoints
from maelab.train.config import LoopConfig, OptimConfig
from maelab.train.rundir import JsonlLog

# 64 images / batch 16 = 4 optimizer steps per epoch.
SMALL = ["pretrain", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "16",
         "--log-every", "1", "--blr", "1e-3", "--device", "cpu"]


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


@pytest.fixture
def ten_steps(monkeypatch):
    """Every plan gets 10 optimizer steps (2.5 epochs), whatever the measurement found."""
    monkeypatch.setattr(budget, "plan_steps", lambda available, spe, costs: 10)


@pytest.fixture
def ten_steps_unmeasured(monkeypatch, ten_steps):
    """As ``ten_steps``, and nothing measured (the step time is said to be 10 ms): for tests of what follows."""
    monkeypatch.setattr("maelab.train.budget.measure_costs", lambda *args, **kwargs: budget.Costs(step_s=0.01))


def test_time_budget_run_completes_its_schedule(tmp_path, monkeypatch):
    """A real measurement and plan: the run ends with its schedule complete (lr at --min-lr on the last
    step), its records consistent with the planned steps, and the plan in config.json.

    The planner's answer is raised to at least 6 steps so that a loaded machine (this one is shared)
    still trains a few epochs; that the answer fits what was left of the budget is asserted as found."""
    planned = []

    def at_least_six(available, spe, costs):
        planned.append((available, budget.outside_seconds(n := real(available, spe, costs), spe, costs), costs, n))
        return max(n, 6)

    real = budget.plan_steps
    monkeypatch.setattr(budget, "plan_steps", at_least_six)
    run = tmp_path / "run"
    start = time.monotonic()
    assert main([*SMALL, "--time-budget", "6s", "--min-lr", "1e-5", "--vis-every", "3", "--output-dir", str(run)]) == 0
    elapsed = time.monotonic() - start
    [(available, outside, costs, found)] = planned
    assert found == 0 or found * costs.step_s + outside <= available  # what the planner found fits
    cfg = config(run)
    plan = cfg["plan"]
    steps = cfg["loop"]["steps"]
    assert cfg["time_budget"] == "6s" and cfg["loop"]["epochs"] is None and steps == plan["steps"] == max(found, 6)
    assert plan["budget_s"] == 6 and plan["steps_per_epoch"] == 4 and plan["epochs"] == steps / 4
    assert plan["step_s"] == costs.step_s > 0 and plan["setup_s"] == pytest.approx(6 - available)
    assert cfg["optim"]["warmup_fraction"] == 0.1 and cfg["optim"]["warmup_epochs"] is None
    log = JsonlLog(run / "log.jsonl").records()
    step_records = [r for r in log if r["event"] == "step"]
    assert [r["step"] for r in step_records] == list(range(1, steps + 1))
    assert step_records[0]["lr"] == 0.0 and step_records[-1]["lr"] == 1e-5
    epochs = [r for r in log if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == list(range(math.ceil(steps / 4)))
    assert epochs[-1]["step"] == steps and epochs[-1]["lr"] == 1e-5
    assert load_train_state(run / "checkpoint-last.safetensors")["step"] == steps
    assert (run / f"recon_epoch{len(epochs):03d}.png").is_file()  # the last (partial) epoch drew its pictures
    if found >= 6:  # loose: the machine is shared, and the budget starts after Python's imports
        assert elapsed < 6 + 20
    assert run_cli(["pretrain", "--resume", str(run)]) == 2  # finished


def test_measurement_does_not_change_the_run(tmp_path, ten_steps):
    """A --time-budget run (measured on copies, then planned) trains exactly like --steps with its plan."""
    budgeted, fixed = tmp_path / "budgeted", tmp_path / "fixed"
    assert main([*SMALL, "--time-budget", "1m", "--vis-every", "100", "--output-dir", str(budgeted)]) == 0
    assert config(budgeted)["loop"]["steps"] == 10
    assert main([*SMALL, "--steps", "10", "--vis-every", "100", "--output-dir", str(fixed)]) == 0
    assert_same_run(budgeted, fixed)


def test_stopped_budget_run_resumes_exactly(tmp_path, ten_steps_unmeasured, monkeypatch):
    """SIGTERM mid-epoch (step 6 of 10) and --stop-after 2 (before the last, partial epoch), each resumed: equal to
    the uninterrupted run, bit for bit; a resume replays the recorded plan without measuring again."""
    extra = ["--time-budget", "1m", "--save-every-steps", "3", "--keep-last", "2", "--vis-every", "100"]
    straight = tmp_path / "straight"
    assert main([*SMALL, *extra, "--output-dir", str(straight)]) == 0
    assert [step for step, _ in numbered_checkpoints(straight)] == [9, 10]  # --keep-last 2 of 3, 4, 6, 8, 9, 10

    run = tmp_path / "signal"
    write = JsonlLog.write

    def write_and_signal(self, record):
        write(self, record)
        if self.path.parent == run and record.get("event") == "step" and record["step"] == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(JsonlLog, "write", write_and_signal)
    assert main([*SMALL, *extra, "--output-dir", str(run)]) == 128 + signal.SIGTERM
    monkeypatch.setattr(JsonlLog, "write", write)
    state = load_train_state(run / "checkpoint-last.safetensors")
    assert (state["epoch"], state["step"], state["iter"]) == (1, 6, 2)

    def no_measuring(*args, **kwargs):
        raise AssertionError("a resume must not measure or plan again")

    planned = config(run)
    monkeypatch.setattr("maelab.train.budget.measure_costs", no_measuring)
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert_same_run(straight, run)
    assert config(run) == planned  # the plan as it was made

    chunks = tmp_path / "chunks"
    monkeypatch.setattr("maelab.train.budget.measure_costs", lambda *args, **kwargs: budget.Costs(step_s=0.01))
    assert main([*SMALL, *extra, "--stop-after", "2", "--output-dir", str(chunks)]) == 0
    assert [r["epoch"] for r in records(chunks) if r["event"] == "epoch"] == [0, 1]
    monkeypatch.setattr("maelab.train.budget.measure_costs", no_measuring)
    assert main(["pretrain", "--resume", str(chunks)]) == 0  # the last, partial epoch
    assert_same_run(straight, chunks)


@pytest.mark.parametrize(("options", "expected"), [
    (["--time-budget", "10"], ["--time-budget '10' is not a duration", "90s, 10m, 1.5h or 1h30m"]),
    (["--time-budget", "ten"], ["--time-budget 'ten' is not a duration"]),
    (["--time-budget", "1h1h"], ["--time-budget '1h1h'"]),
    (["--time-budget", "0s"], ["--time-budget '0s'", "longer than 0"]),
    (["--time-budget", "1m", "--epochs", "2"], ["--time-budget 1m and --epochs 2 exclude each other"]),
    (["--time-budget", "1m", "--steps", "5"], ["--time-budget 1m and --steps 5 exclude each other"]),
    (["--epochs", "2", "--steps", "5"], ["--epochs 2 and --steps 5 exclude each other"]),
    (["--warmup-epochs", "1", "--warmup-fraction", "0.1"], ["--warmup-epochs 1.0 and --warmup-fraction 0.1"]),
    (["--warmup-fraction", "1.5"], ["--warmup-fraction must be in [0, 1)"]),
    (["--steps", "0"], ["--steps must be at least 1"]),
    (["--time-budget", "0.001s"], ["--time-budget 0.001s is too short here", "give at least"]),
])
def test_bad_schedule_exits_2_before_writing(tmp_path, monkeypatch, capsys, options, expected):
    monkeypatch.chdir(tmp_path)  # the default run directory would land here
    assert run_cli([*SMALL, *options]) == 2
    err = " ".join(capsys.readouterr().err.split()).replace("│ ", "").replace(" │", "")
    for text in expected:
        assert text in err, (text, err)
    assert list(tmp_path.iterdir()) == []


def test_resume_of_a_budget_run_refuses_epochs(tmp_path, ten_steps_unmeasured, capsys):
    run = tmp_path / "run"
    assert main([*SMALL, "--time-budget", "1m", "--stop-after", "1", "--output-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(run), "--epochs", "5"]) == 2
    assert "--epochs 5 and --steps 10 exclude each other" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(run), "--time-budget", "5m"]) == 2
    assert "--time-budget cannot change when resuming" in capsys.readouterr().err


def test_default_schedule_is_a_ten_minute_budget():
    """No --epochs, --steps or --time-budget: 10m, warmup 10% of the planned steps; --epochs keeps epochs."""
    default = with_default_schedule(PretrainConfig())
    assert default.time_budget == "10m" and default.loop.epochs is None and default.loop.steps is None
    assert default.optim == OptimConfig(warmup_fraction=0.1)
    epochs = with_default_schedule(PretrainConfig(loop=LoopConfig(epochs=3)))
    assert epochs.time_budget is None and epochs.loop.epochs == 3 and epochs.optim == OptimConfig(warmup_epochs=1.0)
    steps = with_default_schedule(PretrainConfig(loop=LoopConfig(steps=100)))
    assert steps.time_budget is None and steps.optim.warmup_fraction == 0.1
    chosen = with_default_schedule(PretrainConfig(time_budget="90s", optim=OptimConfig(warmup_epochs=0.5)))
    assert chosen.time_budget == "90s" and chosen.optim == OptimConfig(warmup_epochs=0.5)
    with pytest.raises(ValueError, match="--fsdp needs a fixed schedule"):  # checked after the torchrun launch
        check_fsdp_schedule(with_default_schedule(PretrainConfig(fsdp=True)))
    check_fsdp_schedule(with_default_schedule(PretrainConfig(fsdp=True, loop=LoopConfig(epochs=2))))


def test_help_shows_the_schedule_options(capsys):
    assert run_cli(["pretrain", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--time-budget", "--steps", "--warmup-fraction", "--warmup-epochs"):
        assert flag in out, flag
    assert "--plan" not in out  # written by --time-budget, never given
