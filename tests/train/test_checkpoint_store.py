"""Resumable checkpoints: keep-last, torn pairs, a kill during a write, a full disk."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from maelab import checkpoint
from maelab.checkpoint import CheckpointMeta, load_checkpoint
from maelab.cli import main
from maelab.train.checkpoint_store import (
    discard_after,
    find_resumable,
    numbered_checkpoints,
    remove_stale_temporaries,
    save_resumable,
)
from maelab.train.rundir import JsonlLog

SRC = str(Path(__file__).resolve().parents[2] / "src")
META = CheckpointMeta(kind="mae", model_config={})


def weights_of(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((64, 64), value)}


def test_keep_last_prunes_old_and_links_last(tmp_path):
    for step in (3, 6, 9, 12):
        save_resumable(tmp_path, step, weights_of(step), META, {"step": step}, keep_last=2)
    assert [s for s, _ in numbered_checkpoints(tmp_path)] == [9, 12]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-last.safetensors", "checkpoint-last.state.pt",
        "checkpoint-step0000009.safetensors", "checkpoint-step0000009.state.pt",
        "checkpoint-step0000012.safetensors", "checkpoint-step0000012.state.pt",
    ]
    last, newest = tmp_path / "checkpoint-last.safetensors", tmp_path / "checkpoint-step0000012.safetensors"
    assert os.path.samefile(last, newest)  # a hard link: no second copy on disk
    weights, state = find_resumable(tmp_path)
    assert weights == last and state["step"] == 12


def test_torn_pair_falls_back_to_the_newest_complete_checkpoint(tmp_path, caplog):
    for step in (3, 6):
        save_resumable(tmp_path, step, weights_of(step), META, {"step": step}, keep_last=2)
    # A kill between the two renames of "last": new state, old weights.
    (tmp_path / "checkpoint-last.state.pt").unlink()
    os.link(tmp_path / "checkpoint-step0000003.state.pt", tmp_path / "checkpoint-last.state.pt")
    (tmp_path / "checkpoint-step0000006.safetensors").unlink()  # and the numbered twin lost too
    weights, state = find_resumable(tmp_path)
    assert weights.name == "checkpoint-step0000003.safetensors" and state["step"] == 3
    assert "come from different saves" in caplog.text
    for path in tmp_path.glob("*.state.pt"):
        path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no usable checkpoint"):
        find_resumable(tmp_path)


def test_resume_point_discards_newer_and_orphaned_files(tmp_path):
    for step in (3, 6, 9):
        save_resumable(tmp_path, step, weights_of(step), META, {"step": step}, keep_last=3)
    (tmp_path / "checkpoint-step0000009.safetensors").unlink()  # a kill left step 9's state alone
    discard_after(tmp_path, 3)  # resuming from step 3: steps 6 and 9 are an abandoned future
    assert [s for s, _ in numbered_checkpoints(tmp_path)] == [3]
    assert not (tmp_path / "checkpoint-step0000009.state.pt").exists()


CHILD = textwrap.dedent("""
    import sys, time
    import torch
    from pathlib import Path
    from maelab import checkpoint
    from maelab.checkpoint import CheckpointMeta
    from maelab.train.checkpoint_store import save_resumable

    run, phase = Path(sys.argv[1]), sys.argv[2]
    meta = CheckpointMeta(kind="mae", model_config={})
    save_resumable(run, 1, {"w": torch.full((256, 256), 1.0)}, meta, {"step": 1}, keep_last=1)
    real = checkpoint.atomic_write

    def slow(path, write):
        if phase not in path.name or "step0000002" not in path.name:
            return real(path, write)
        def stalled(handle):
            handle.write(b"x" * 4096)
            handle.flush()
            time.sleep(600)  # killed here, in the middle of the write
        return real(path, stalled)

    checkpoint.atomic_write = slow
    save_resumable(run, 2, {"w": torch.full((256, 256), 2.0)}, meta, {"step": 2}, keep_last=1)
""")


@pytest.mark.parametrize("phase", ["state.pt", "safetensors"])
def test_kill_during_checkpoint_write_keeps_previous_loadable(tmp_path, phase):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), phase], env=env)
    deadline = time.monotonic() + 120
    while not [p for p in tmp_path.glob(".checkpoint-step0000002.*.tmp") if p.stat().st_size >= 4096]:
        assert child.poll() is None and time.monotonic() < deadline, "the child never started the second write"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    weights, state = find_resumable(tmp_path)
    assert state["step"] == 1
    assert torch.equal(load_checkpoint(weights)[0]["w"], torch.full((256, 256), 1.0))
    remove_stale_temporaries(tmp_path)
    assert not list(tmp_path.glob(".*"))


SMALL = ["--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "16",
         "--log-every", "1", "--epochs", "2", "--vis-every", "100", "--device", "cpu"]


def test_disk_full_is_reported_and_loses_nothing(tmp_path, monkeypatch, capsys):
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(["pretrain", *SMALL, "--output-dir", str(straight)]) == 0
    assert main(["pretrain", *SMALL, "--stop-after", "1", "--output-dir", str(run)]) == 0
    saved = {p.name: p.read_bytes() for p in run.glob("checkpoint-*")}

    real = checkpoint.atomic_write

    def full_disk(path, write):
        if not Path(path).name.startswith("checkpoint-"):
            return real(path, write)

        def partial(handle):
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")

        return real(path, partial)

    monkeypatch.setattr(checkpoint, "atomic_write", full_disk)
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(run)]) == 1
    err = capsys.readouterr().err
    assert "disk full while writing" in err and "--resume" in err
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in run.glob("checkpoint-*")} == saved  # nothing saved is lost
    assert not list(run.glob(".*.tmp"))

    # After space is freed the run continues as if nothing happened.
    assert main(["pretrain", "--resume", str(run)]) == 0
    a, b = load_checkpoint(straight)[0], load_checkpoint(run)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = lambda rs: [{k: v for k, v in r.items() if k not in ("img_per_s", "epoch_time_s")} for r in rs]  # noqa: E731
    assert drop(JsonlLog(straight / "log.jsonl").records()) == drop(JsonlLog(run / "log.jsonl").records())
