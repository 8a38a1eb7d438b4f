"""A new run that fails before its first checkpoint removes what it wrote, and only that."""

from __future__ import annotations

import pytest

from maelab.train.rundir import removed_if_failed_before_checkpoint


def _fail_after_writing(run_dir, names):
    with pytest.raises(RuntimeError), removed_if_failed_before_checkpoint(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            (run_dir / name).write_text("x")
        raise RuntimeError("boom")


def test_failed_start_removes_its_files_and_the_directories_it_created(tmp_path):
    run_dir = tmp_path / "runs" / "a"
    _fail_after_writing(run_dir, ["config.json", "log.jsonl", "events.out.tfevents.1.host", "recon.png"])
    assert list(tmp_path.iterdir()) == []


def test_failed_start_keeps_what_a_user_made(tmp_path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()  # the user's own (empty) directory, and a file of theirs that maelab never writes
    _fail_after_writing(run_dir, ["config.json", "notes.txt"])
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]
    run_dir.joinpath("notes.txt").unlink()
    _fail_after_writing(run_dir, ["log.jsonl"])
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []  # the user made the directory: it stays


def test_files_present_on_entry_are_never_removed(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("the user's")
    _fail_after_writing(run_dir, ["log.jsonl"])
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]


def test_a_run_with_a_checkpoint_keeps_everything(tmp_path):
    run_dir = tmp_path / "run"
    _fail_after_writing(run_dir, ["config.json", "log.jsonl", "checkpoint-step0000001.safetensors"])
    assert len(list(run_dir.iterdir())) == 3


def test_success_and_disabled_keep_everything(tmp_path):
    run_dir = tmp_path / "run"
    with removed_if_failed_before_checkpoint(run_dir):
        run_dir.mkdir()
        (run_dir / "config.json").write_text("x")
    assert (run_dir / "config.json").exists()
    other = tmp_path / "other"
    with pytest.raises(RuntimeError), removed_if_failed_before_checkpoint(other, enabled=False):
        other.mkdir()
        (other / "config.json").write_text("x")
        raise RuntimeError("boom")
    assert (other / "config.json").exists()


def test_finetune_that_fails_at_its_first_step_leaves_nothing_and_runs_again(tmp_path, monkeypatch):
    """finetune (and linprobe) share pretrain's run setup: a failed start does not block the same command."""
    import maelab.finetune.command as finetune
    from maelab.cli import main

    def broken(*args, **kwargs):
        def step(*_):
            raise RuntimeError("a bug at the first step")
        return step

    argv = ["finetune", "--init", "none", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64",
            "--batch-size", "32", "--epochs", "1", "--tensorboard", "--output-dir", str(tmp_path / "runs" / "ft")]
    real = finetune.finetune_step
    monkeypatch.setattr(finetune, "finetune_step", broken)
    assert main(argv) == 1
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(finetune, "finetune_step", real)
    assert main(argv) == 0
