"""``finetune --resume`` and ``linprobe --resume``: a run stopped inside an epoch and resumed equals an
uninterrupted run (weights bit for bit, log, metrics.json); runs that cannot be resumed are refused.

The stops are real: a SIGTERM delivered in process while a chosen step is logged (the loop
finishes that step, saves, exits 143), and a ``python -m maelab finetune`` child killed with
SIGKILL, which resumes from its last ``--save-every-steps`` checkpoint.
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
import torch

from maelab.checkpoint import load_checkpoint, load_train_state
from maelab.cli import main
from maelab.train.checkpoint_store import numbered_checkpoints
from maelab.train.rundir import JsonlLog

# The cls token of the last block: the features' default before the validated one (avg over all blocks),
# which this file's assertions were written for.
CLS = ["--pool", "token", "--layers", "1"]

# The pre-trained fixture has 128 synthetic train images: batch 16 gives 8 optimizer steps per epoch.
COMMON = ["--batch-size", "16", "--log-every", "1", "--epochs", "2", "--device", "cpu"]
# --val-fraction 0: the step counts below assume every image trains.
FINETUNE = ["finetune", *COMMON, "--val-fraction", "0", "--warmup-epochs", "0.5"]
LINPROBE = ["linprobe", *CLS, *COMMON, "--val-fraction", "0", "--optimizer", "lars", "--warmup-epochs", "0.5",
            "--lr", "0.0625"]  # blr 1.0 at batch 16
TIMING = ("img_per_s", "epoch_time_s")
SRC = str(Path(__file__).resolve().parents[2] / "src")


def records(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in JsonlLog(run / "log.jsonl").records()]


def assert_same_run(a: Path, b: Path) -> None:
    """Same final and best weights, the same log (timings aside) and the same metrics.json."""
    for name in ("checkpoint-last.safetensors", "checkpoint-best.safetensors"):
        wa, _ = load_checkpoint(a / name)
        wb, _ = load_checkpoint(b / name)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), (name, key)
    assert records(a) == records(b)
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())


def stop_at(monkeypatch, step: int) -> None:
    """Send this process SIGTERM right after the log record of optimizer ``step`` is written."""
    write = JsonlLog.write

    def write_and_signal(self, record):
        write(self, record)
        if record.get("event") == "step" and record["step"] == step:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(JsonlLog, "write", write_and_signal)


CASES = {
    "finetune": FINETUNE,
    "linprobe-cached": LINPROBE,
    "linprobe-augment": [*LINPROBE, "--augment"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_sigterm_mid_epoch_then_resume_equals_uninterrupted(pretrained_run, tmp_path, monkeypatch, case):
    """Stopped after step 11 (3 batches into epoch 2, past one evaluation and one best checkpoint)."""
    argv = [*CASES[case], "--checkpoint", str(pretrained_run)]
    command = argv[0]
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert main([*argv, "--output-dir", str(reference)]) == 0

    stop_at(monkeypatch, 11)
    assert main([*argv, "--output-dir", str(run)]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    state = load_train_state(run / "checkpoint-last.safetensors")
    assert (state["epoch"], state["step"], state["iter"]) == (1, 11, 3)
    assert [row["epoch"] for row in state["classifier"]["epochs"]] == [0]
    assert records(run)[-1]["step"] == 11  # nothing logged past the checkpoint
    assert not (run / "metrics.json").exists()

    assert main([command, "--resume", str(run), "--num-workers", "1"]) == 0
    assert_same_run(reference, run)


def test_finetune_killed_resumes_from_periodic_checkpoint(pretrained_run, tmp_path):
    """SIGKILL (no chance to save) in a child process: resume from the last --save-every-steps checkpoint;
    the log written after it is dropped and written again identically. --stop-after splits the resume."""
    argv = [*FINETUNE, "--checkpoint", str(pretrained_run), "--mixup", "0", "--smoothing", "0"]
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert main([*argv, "--output-dir", str(reference)]) == 0

    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-m", "maelab", *argv, "--save-every-steps", "3", "--keep-last", "2",
                              "--output-dir", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    log = JsonlLog(run / "log.jsonl")
    deadline = time.monotonic() + 120
    while not (log.path.exists() and any(r.get("step", 0) >= 5 for r in log._readable_records())):
        assert child.poll() is None, child.communicate()[0]
        assert time.monotonic() < deadline, "step 5 never appeared"
        time.sleep(0.01)
    child.kill()
    child.communicate(timeout=60)
    steps = [s for s, _ in numbered_checkpoints(run)]
    assert steps and all(s % 3 == 0 for s in steps), steps

    assert main([argv[0], "--resume", str(run), "--stop-after", "1"]) == 0  # to the end of epoch 1
    assert load_train_state(run / "checkpoint-last.safetensors")["epoch"] == 1
    assert main([argv[0], "--resume", str(run)]) == 0
    assert_same_run(reference, run)


def test_bad_resumes_exit_2_and_change_nothing(pretrained_run, tmp_path, capsys):
    finetuned, probed = tmp_path / "ft", tmp_path / "lp"
    assert main([*FINETUNE, "--epochs", "1", "--checkpoint", str(pretrained_run), "--output-dir", str(finetuned)]) == 0
    assert main([*LINPROBE, "--epochs", "1", "--checkpoint", str(pretrained_run), "--output-dir", str(probed)]) == 0
    (tmp_path / "empty").mkdir()
    before = {p: p.read_bytes() for run in (finetuned, probed) for p in run.iterdir()}
    capsys.readouterr()
    cases = [
        (["finetune", "--resume", str(finetuned)], "already finished 1 epochs; pass --epochs N with N > 1"),
        (["linprobe", "--resume", str(probed)], "already finished 1 epochs"),
        (["finetune", "--resume", str(pretrained_run)], "is a maelab pretrain run, not a finetune run"),
        (["linprobe", "--resume", str(finetuned)], "is a maelab finetune run, not a linprobe run"),
        (["pretrain", "--resume", str(probed)], "is a maelab linprobe run, not a pretrain run"),
        (["finetune", "--resume", str(tmp_path / "empty")], "no config.json there"),
        (["finetune", "--resume", str(finetuned), "--epochs", "2", "--mixup", "0.5"],
         "--mixup cannot change when resuming"),
        (["linprobe", "--resume", str(probed), "--epochs", "2", "--batch-size", "8"],
         "--batch-size cannot change when resuming"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert {p: p.read_bytes() for run in (finetuned, probed) for p in run.iterdir()} == before


def test_finished_run_extends_with_more_epochs(pretrained_run, tmp_path):
    """--epochs may grow on resume: the run continues past its old end, keeping its first epoch's records."""
    run = tmp_path / "lp"
    assert main([*LINPROBE, "--epochs", "1", "--checkpoint", str(pretrained_run), "--output-dir", str(run)]) == 0
    first = json.loads((run / "metrics.json").read_text())["epochs"]
    assert main(["linprobe", "--resume", str(run), "--epochs", "2"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1] and metrics["epochs"][0] == first[0]
    assert json.loads((run / "config.json").read_text())["loop"]["epochs"] == 2
