"""Comparing two runs for the exact-resume tests (imported by them; ``tests/`` is on sys.path through its conftest)."""

from __future__ import annotations

from pathlib import Path

import torch

from maelab.checkpoint import load_checkpoint
from maelab.train.rundir import JsonlLog

TIMING = ("img_per_s", "epoch_time_s")


def records(run: Path) -> list[dict]:
    """The run's log records without their timings."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in JsonlLog(run / "log.jsonl").records()]


def assert_same_weights_and_log(a: Path, b: Path) -> None:
    """Bitwise the same final weights and the same log (timings aside)."""
    wa, _ = load_checkpoint(a)
    wb, _ = load_checkpoint(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert records(a) == records(b)
