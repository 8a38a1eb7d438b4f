"""Exit statuses: a bad option or input exits 2 with one line; a bug exits 1 with its traceback."""

from __future__ import annotations

import pytest
import torch

import maelab.pretrain.command as pretrain_command
from maelab.cli import is_user_error, main

SMALL = ["--model", "debug", "--dataset", "synthetic", "--synthetic-size", "32", "--batch-size", "16",
         "--epochs", "1"]


def test_bad_option_exits_2_with_one_line(tmp_path, capsys):
    assert main(["pretrain", *SMALL, "--batch-size", "64", "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("maelab: error: ") and "--batch-size" in lines[0]


def _torch_value_error(*_):
    # A library's own check failing inside a step: maelab passed it something wrong.
    torch.nn.functional.binary_cross_entropy(torch.zeros(2), torch.zeros(3))


def _runtime_error(*_):
    return torch.zeros(2, 3) @ torch.zeros(2, 3)


@pytest.mark.parametrize(("bug", "name"), [(_torch_value_error, "ValueError"), (_runtime_error, "RuntimeError")])
def test_a_bug_inside_a_run_exits_1_with_its_traceback(tmp_path, capsys, monkeypatch, bug, name):
    monkeypatch.setattr(pretrain_command, "mae_step", lambda *args, **kwargs: bug)
    run = tmp_path / "run"
    assert main(["pretrain", *SMALL, "--output-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and f"maelab: internal error: {name}" in err
    assert "maelab: error:" not in err
    assert not run.exists()  # it failed before its first checkpoint: nothing left in the way


def _raise(exc):
    try:
        raise exc
    except Exception as caught:  # noqa: BLE001
        return caught


def _raise_from(fn, *args):
    try:
        fn(*args)
    except Exception as caught:  # noqa: BLE001
        return caught
    raise AssertionError("no exception")


def test_user_errors_are_maelab_value_errors_and_missing_files():
    from maelab.train.run import check_batch_size

    assert is_user_error(_raise_from(check_batch_size, 1, 2))
    assert not is_user_error(_raise(RuntimeError("boom")))
    assert is_user_error(FileNotFoundError("missing.png"))
    assert not is_user_error(_raise(ValueError("raised outside maelab, as by a library")))
