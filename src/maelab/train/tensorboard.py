"""TensorBoard event files as a view of a run's JSONL log.

:class:`TensorBoardMirror` receives every record the run writes to ``log.jsonl`` (through
:class:`maelab.train.rundir.JsonlLog`) and every picture the run saves, and writes them as
scalars and images; nothing is logged to TensorBoard that is not in the JSONL log or a PNG.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# Record keys that say where a record belongs rather than what was measured.
POSITION_KEYS = frozenset({"event", "epoch", "iter", "step"})


def scalar_tag(record: dict[str, Any], key: str) -> str:
    """The TensorBoard tag of ``record[key]``: ``<event>/<key>``, e.g. ``step/loss``, ``epoch/top1``."""
    return f"{record.get('event', 'record')}/{key}"


def record_step(record: dict[str, Any]) -> int:
    """The x-axis value of a record: the optimizer step when it has one, else its epoch, else 0."""
    return int(record.get("step", record.get("epoch", 0)))


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's finite numeric measurements by tag (position keys, strings and booleans left out)."""
    out = {}
    for key, value in record.items():
        if key in POSITION_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[scalar_tag(record, key)] = float(value)
    return out


class TensorBoardMirror:
    """Writes JSONL records and saved pictures into TensorBoard event files in the run directory."""

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides earlier files' events at or after this step (work lost on resume).
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    @classmethod
    def open(cls, run_dir: Path, enabled: bool, purge_step: int | None = None) -> TensorBoardMirror | None:
        """A mirror when ``enabled`` and the ``tensorboard`` package is installed; otherwise None."""
        if not enabled:
            return None
        if importlib.util.find_spec("tensorboard") is None:
            _say_not_installed()
            return None
        return cls(run_dir, purge_step)

    def record(self, record: dict[str, Any]) -> None:
        step = record_step(record)
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def image(self, tag: str, path: Path, step: int) -> None:
        """Add the picture saved at ``path`` (a PNG the run just wrote)."""
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))  # (H, W, 3) uint8
        self.writer.add_image(tag, array, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@functools.cache
def _say_not_installed() -> None:
    # Once per process: a --time-budget run opens a throw-away log to time its work before the run's own.
    logger.info("tensorboard is not installed, so no event files are written "
                "(pip install 'maelab[tensorboard]'; --no-tensorboard silences this)")
