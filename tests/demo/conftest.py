"""A tiny pre-trained checkpoint for the demo tests, made in seconds on synthetic data."""

from __future__ import annotations

import pytest

from maelab.cli import main

PRETRAIN = ["pretrain", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64",
            "--batch-size", "32", "--epochs", "1", "--no-tensorboard"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """Run directory of a 1-epoch debug MAE (32x32 gray, 8x8 patches, norm-pixel target)."""
    run = tmp_path_factory.mktemp("demo") / "run"
    assert main([*PRETRAIN, "--output-dir", str(run)]) == 0
    return run
