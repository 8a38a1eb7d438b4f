"""Exact resume: a run stopped mid-epoch (signal or crash) and resumed equals an uninterrupted run.

The stopped runs are real ``python -m maelab pretrain`` processes, sent SIGTERM or SIGKILL
once their log shows a chosen optimizer step; weights are compared bit for bit on the CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_checks import assert_same_weights_and_log as assert_same_run
from run_checks import records

from maelab.checkpoint import load_train_state
from maelab.cli import main
from maelab.train.checkpoint_store import numbered_checkpoints
from maelab.train.rundir import JsonlLog

# 96 images / batch 8 = 12 optimizer steps per epoch, 24 in all.
RUN = ["--model", "debug", "--dataset", "synthetic", "--synthetic-size", "96", "--batch-size", "8",
       "--log-every", "1", "--blr", "1e-3", "--epochs", "2", "--vis-every", "100", "--device", "cpu"]
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(["pretrain", *RUN, "--output-dir", str(run)]) == 0
    return run


def start_child(run: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "maelab", "pretrain", *RUN, *extra, "--output-dir", str(run)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_step(child: subprocess.Popen, run: Path, step: int, timeout: float = 120) -> None:
    """Block until the child's log holds a step record with ``step`` (the child keeps running)."""
    log = JsonlLog(run / "log.jsonl")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()[0]
        if log.path.exists() and any(r.get("step", 0) >= step for r in log._readable_records()):
            return
        time.sleep(0.01)
    child.kill()
    raise AssertionError(f"step {step} never appeared in {log.path}")


def test_sigterm_mid_epoch_saves_and_resume_is_exact(straight, tmp_path):
    """SIGTERM: the child finishes its step, saves, exits 143; the resume (with a different
    --num-workers) reproduces the uninterrupted run's weights and log exactly."""
    run = tmp_path / "run"
    child = start_child(run, "--num-workers", "2")
    wait_for_step(child, run, 4)
    child.send_signal(signal.SIGTERM)
    output = child.communicate(timeout=120)[0]
    assert child.returncode == 128 + signal.SIGTERM, output
    assert "received SIGTERM" in output and f"--resume {run}" in output
    state = load_train_state(run / "checkpoint-last.safetensors")
    assert state["step"] >= 4 and 0 < state["iter"] < 12  # stopped inside an epoch
    assert state["step"] == 12 * state["epoch"] + state["iter"]
    assert records(run)[-1]["step"] == state["step"]  # nothing logged past the checkpoint

    assert main(["pretrain", "--resume", str(run), "--num-workers", "0"]) == 0
    assert_same_run(straight, run)


def test_crash_resumes_from_last_periodic_checkpoint(straight, tmp_path):
    """SIGKILL (no chance to save): resume from the last --save-every-steps checkpoint; the
    log written after it is dropped and rewritten identically."""
    run = tmp_path / "run"
    child = start_child(run, "--save-every-steps", "3", "--keep-last", "2")
    wait_for_step(child, run, 8)
    child.kill()
    child.communicate(timeout=60)
    steps = [s for s, _ in numbered_checkpoints(run)]
    assert 1 <= len(steps) <= 2 and all(s % 3 == 0 for s in steps), steps
    assert max(r["step"] for r in JsonlLog(run / "log.jsonl").records()) >= 8

    assert main(["pretrain", "--resume", str(run)]) == 0
    assert_same_run(straight, run)
    assert len(numbered_checkpoints(run)) == 2  # --keep-last 2 still holds


def test_stop_at_chosen_step_with_accumulation(tmp_path, monkeypatch):
    """In process, with --accum-iter 2: a SIGTERM delivered while step 3 is logged (in the
    middle of the epoch) stops after step 3; resume equals the uninterrupted run."""
    extra = ["--accum-iter", "2", "--save-every-steps", "100"]
    reference = tmp_path / "reference"
    assert main(["pretrain", *RUN, *extra, "--output-dir", str(reference)]) == 0

    write = JsonlLog.write

    def write_and_signal(self, record):
        write(self, record)
        if record.get("event") == "step" and record["step"] == 3 and record["iter"] == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    run = tmp_path / "run"
    monkeypatch.setattr(JsonlLog, "write", write_and_signal)
    assert main(["pretrain", *RUN, *extra, "--output-dir", str(run)]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    state = load_train_state(run / "checkpoint-last.safetensors")
    assert (state["epoch"], state["step"], state["iter"]) == (0, 3, 6)
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert_same_run(reference, run)


def test_resume_refuses_changed_training_set(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *RUN, "--epochs", "2", "--stop-after", "1", "--output-dir", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    config["data"]["synthetic_size"] = 88
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(run)]) == 2
    assert "has 88 images, but the run was trained on 96" in capsys.readouterr().err
