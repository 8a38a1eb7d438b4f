"""Fixtures shared across the suite: a tiny pre-trained checkpoint for the evaluation and resume tests."""

from __future__ import annotations

import pytest

from maelab.cli import main

PRETRAIN = ["pretrain", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "128",
            "--batch-size", "32", "--epochs", "1"]


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory):
    """Run directory of a 1-epoch debug MAE on 128 synthetic images (4 classes, 32 test images)."""
    run = tmp_path_factory.mktemp("pretrained") / "run"
    assert main([*PRETRAIN, "--output-dir", str(run)]) == 0
    return run
