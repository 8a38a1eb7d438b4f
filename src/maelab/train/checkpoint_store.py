"""A run directory's resumable checkpoints: numbered by step, the newest K kept, ``checkpoint-last`` on top.

Each save writes ``checkpoint-stepNNNNNNN.{state.pt,safetensors}`` (each file atomically),
then points ``checkpoint-last.*`` at it with hard links (no extra disk space; a copy where
the file system has no links), then deletes numbered checkpoints beyond the newest
``keep_last``. Until the new checkpoint is complete nothing older is touched, so a kill or a
full disk at any moment leaves at least the previous checkpoint resumable;
:func:`find_resumable` picks the newest complete one.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from maelab.checkpoint import (
    LAST,
    CheckpointMeta,
    atomic_write,
    fsync_dir,
    load_train_state,
    read_meta,
    save_checkpoint,
    state_path_of,
)

logger = logging.getLogger(__name__)

_NUMBERED = re.compile(r"checkpoint-step(\d+)\.safetensors")


def numbered_stem(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"checkpoint-step{step:07d}"


def numbered_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, weights path) of the numbered checkpoints, oldest first."""
    found = []
    for path in Path(run_dir).iterdir():
        match = _NUMBERED.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_resumable(
    run_dir: Path, step: int, state_dict: dict[str, torch.Tensor], meta: CheckpointMeta, train_state: dict,
    keep_last: int,
) -> Path:
    """Write the checkpoint of optimizer step ``step``, make it ``checkpoint-last``, prune old ones."""
    weights = save_checkpoint(numbered_stem(run_dir, step), state_dict, meta, train_state)
    for src in (state_path_of(weights), weights):
        suffix = ".state.pt" if src.name.endswith(".state.pt") else ".safetensors"
        _replace_with_link(src, Path(run_dir) / f"{LAST}{suffix}")
    fsync_dir(Path(run_dir))
    for _, old in numbered_checkpoints(run_dir)[:-keep_last]:
        if old != weights:
            state_path_of(old).unlink(missing_ok=True)
            old.unlink(missing_ok=True)
    _remove_orphan_states(Path(run_dir), step)
    return weights


def discard_after(run_dir: Path, step: int) -> None:
    """Delete numbered checkpoints past ``step``: on a resume from an older one they belong to an abandoned future."""
    for later, weights in numbered_checkpoints(run_dir):
        if later > step:
            logger.info("removing %s, newer than the checkpoint the run resumes from", weights.name)
            state_path_of(weights).unlink(missing_ok=True)
            weights.unlink(missing_ok=True)
    _remove_orphan_states(Path(run_dir), step)


def _remove_orphan_states(run_dir: Path, keep_step: int) -> None:
    # A kill between a numbered checkpoint's two files leaves its state without weights.
    for state in run_dir.glob("checkpoint-step*.state.pt"):
        weights = state.with_name(state.name.removesuffix(".state.pt") + ".safetensors")
        if not weights.exists() and state.name != f"checkpoint-step{keep_step:07d}.state.pt":
            state.unlink(missing_ok=True)


def _replace_with_link(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        data = src.read_bytes()
        atomic_write(dst, lambda f: f.write(data))
        return
    os.replace(tmp, dst)


def find_resumable(run_dir: Path) -> tuple[Path, dict]:
    """The newest complete checkpoint of ``run_dir``: (weights path, training state).

    ``checkpoint-last`` first, then the numbered ones newest first; damaged, torn or unsafe
    ones are skipped with a warning. Raises ValueError when none can be used.
    """
    run_dir = Path(run_dir)
    candidates = [run_dir / f"{LAST}.safetensors"] + [p for _, p in reversed(numbered_checkpoints(run_dir))]
    problems = []
    for weights in candidates:
        if not weights.exists():
            continue
        try:
            state = load_train_state(weights)
            read_meta(weights)
        except (ValueError, OSError) as exc:
            problems.append(f"{weights.name}: {exc}")
            logger.warning("cannot resume from %s: %s", weights, exc)
            continue
        if problems:
            logger.warning("resuming from the older complete checkpoint %s", weights.name)
        return weights, state
    detail = "; ".join(problems) if problems else "no checkpoint files"
    raise ValueError(f"--resume {run_dir}: no usable checkpoint ({detail})")


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete temporary files left by writes that a kill interrupted (they were never renamed into place)."""
    for path in Path(run_dir).glob(".*.tmp"):
        logger.info("removing %s, left by an interrupted write", path.name)
        path.unlink(missing_ok=True)
