"""``maelab demo`` without a browser: checkpoint discovery, errors, the page's handler."""

from __future__ import annotations

import os
import shutil
import time

from maelab.cli import main
from maelab.demo import app as demo_app
from maelab.demo.app import DemoModel, load_demo_model, newest_run


def test_newest_run_is_picked(demo_run, tmp_path):
    runs = tmp_path / "runs"
    old, new = runs / "old", runs / "new"
    shutil.copytree(demo_run, old)
    shutil.copytree(demo_run, new)
    (runs / "not-a-run").mkdir()
    (runs / "broken").mkdir()
    (runs / "broken" / "checkpoint-last.safetensors").write_text("garbage")
    past = time.time() - 3600
    os.utime(old / "checkpoint-last.safetensors", (past, past))
    assert newest_run(runs) == new


def test_no_run_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "no pre-training run found under runs/" in err and "maelab pretrain" in err


def test_missing_extra_is_named(demo_run, monkeypatch, capsys):
    monkeypatch.setattr(demo_app, "gradio_available", lambda: False)
    assert main(["demo", str(demo_run)]) == 2
    assert "pip install 'maelab[demo]'" in capsys.readouterr().err


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "nothing-here")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_loaded_model_serves_test_images(demo_run):
    served = load_demo_model(demo_run)
    assert isinstance(served, DemoModel) and served.test_set is not None and len(served.test_set) == 16
    assert served.epoch == 1 and not any(p.requires_grad for p in served.model.parameters())
