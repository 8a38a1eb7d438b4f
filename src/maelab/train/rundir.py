"""Run directories and their logs: a run is never silently overwritten."""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from maelab.checkpoint import atomic_write
from maelab.train.tensorboard import TensorBoardMirror

logger = logging.getLogger(__name__)

DEFAULT_RUNS = Path("runs")

# What a run writes into its directory before its first checkpoint: the only names a failed start removes.
EARLY_OUTPUTS = ("config.json", "log.jsonl", "events.out.tfevents.*", "recon_epoch*.png", "recon.png", "loss.png",
                 "metrics.json", "confusion.png", ".*.tmp")


def new_run_dir(path: Path | None, prefix: str) -> Path:
    """Pick the directory for a new run and refuse one that already holds files.

    Nothing is created here: callers validate everything first and create the directory
    only when the run is about to start.
    """
    if path is None:
        path = DEFAULT_RUNS / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(
            f"run directory {path} already exists and is not empty; pass --resume {path} to "
            "continue that run, or choose another --output-dir"
        )
    return path


@contextmanager
def removed_if_failed_before_checkpoint(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Around a new run: when it fails before writing any checkpoint, remove what it wrote, directory included.

    Such a directory could neither be resumed (no checkpoint) nor reused (not empty), so the same command
    would be refused until the user cleaned up by hand. Only entries that were absent on entry and carry a
    name maelab writes (:data:`EARLY_OUTPUTS`) are removed, and only directories created here (now empty):
    nothing a user put there is ever touched. A run with any checkpoint keeps everything (``--resume``).
    """
    run_dir = Path(run_dir)
    if not enabled:
        yield
        return
    missing = [p for p in (run_dir, *run_dir.parents) if not p.exists()]  # innermost first
    before = set(run_dir.iterdir()) if run_dir.is_dir() else set()
    try:
        yield
    except BaseException:
        if run_dir.is_dir() and not any(run_dir.glob("checkpoint-*")):
            _remove_new_outputs(run_dir, before, missing)
        raise


def _remove_new_outputs(run_dir: Path, before: set[Path], created_dirs: list[Path]) -> None:
    removed = []
    for path in sorted(set(run_dir.iterdir()) - before):
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in EARLY_OUTPUTS):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    for directory in created_dirs:
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
    kept = run_dir.is_dir()
    logger.info("the run stopped before its first checkpoint: removed %s%s", ", ".join(removed) or "nothing",
                f" (kept {run_dir}: it holds files maelab did not write)" if kept and run_dir in created_dirs else "")


def open_log(run_dir: Path, tensorboard: bool, purge_step: int | None = None) -> JsonlLog:
    """The run's ``log.jsonl``, mirrored to TensorBoard event files when asked for and installed."""
    return JsonlLog(Path(run_dir) / "log.jsonl", TensorBoardMirror.open(run_dir, tensorboard, purge_step))


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class JsonlLog:
    """Append-only JSON-lines metrics log, flushed after every record.

    The log is the run's source of truth; an optional ``mirror`` (TensorBoard) receives every
    record after it is written, and every picture announced through :meth:`image`.
    """

    def __init__(self, path: Path, mirror: TensorBoardMirror | None = None) -> None:
        self.path = Path(path)
        self.mirror = mirror

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.mirror is not None:
            self.mirror.record(record)

    def image(self, tag: str, path: Path, step: int) -> None:
        """A picture the run has saved at ``path`` (the PNG is the record; mirrors show it too)."""
        if self.mirror is not None:
            self.mirror.image(tag, path, step)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_to(self, epoch: int, iteration: int) -> None:
        """Keep only what happened before a checkpoint taken ``iteration`` batches into ``epoch``.

        Records of earlier epochs stay; of ``epoch`` itself only per-step records (steps,
        skipped non-finite steps) up to ``iteration``. A resumed run then appends exactly
        the records an uninterrupted run would have written after that point. A last line
        cut short by a kill is dropped as well.
        """
        kept = []
        for record in self._readable_records():
            at = record.get("epoch", 0)
            if at < epoch or (at == epoch and record.get("event") != "epoch" and record.get("iter", 0) <= iteration):
                kept.append(record)
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(self.path, lambda f: f.write(text.encode()))

    def _readable_records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a record half-written when the process was killed
        return out
