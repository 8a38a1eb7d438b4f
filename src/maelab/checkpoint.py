"""Checkpoints: weights as safetensors, resumable training state as a weights-only torch file.

A checkpoint is a pair of files sharing a stem:

* ``<stem>.safetensors`` holds every model tensor plus JSON metadata under the key
  ``"maelab"`` (kind, model config, data statistics, epoch). It is all that inference,
  reconstruction and evaluation need, and it is safe to load from anywhere.
* ``<stem>.state.pt`` (optional) holds optimizer and loop state for ``--resume``. It is
  read with ``torch.load(weights_only=True)``, which never runs pickled code.

Every file is written to a temporary name, fsynced and renamed (and the directory fsynced),
so a kill during a write leaves the previous checkpoint intact. The two files of a resumable
checkpoint share a random ``save_id``, so a pair torn by a kill between the two renames is
recognised instead of resuming wrong weights with another step's optimizer state.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

FORMAT_KEY = "maelab"
LAST = "checkpoint-last"


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself."""

    kind: str
    """"mae" for a pre-trained autoencoder, "classifier" for a fine-tuned/probed model."""
    model_config: dict[str, Any]
    data_info: dict[str, Any] | None = None
    epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            dict(kind=self.kind, model_config=self.model_config, data_info=self.data_info,
                 epoch=self.epoch, extra=self.extra)
        )

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        raw = json.loads(text)
        return cls(raw["kind"], raw["model_config"], raw.get("data_info"), raw.get("epoch", 0), raw.get("extra") or {})


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through ``write(file)`` to a temporary file beside ``path``, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise OSError(
                exc.errno, f"disk full while writing {path}; the previous version of the file is untouched and "
                f"the partial write was removed. Free space on {path.parent} (or lower --keep-last) and "
                "continue with --resume"
            ) from exc
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable (a crash right after could otherwise undo them)."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(
    stem: Path, state_dict: dict[str, torch.Tensor], meta: CheckpointMeta, train_state: dict | None = None
) -> Path:
    """Write ``<stem>.safetensors`` (and ``<stem>.state.pt`` when given); returns the weights path."""
    stem = Path(stem)
    weights = stem.with_name(stem.name + ".safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    if train_state is not None:
        save_id = uuid.uuid4().hex
        train_state = dict(train_state, save_id=save_id)
        meta = CheckpointMeta(meta.kind, meta.model_config, meta.data_info, meta.epoch,
                              dict(meta.extra, save_id=save_id))
        atomic_write(state_path_of(weights), lambda f: torch.save(train_state, f))
    data = safetensors_bytes(tensors, metadata={FORMAT_KEY: meta.to_json()})
    atomic_write(weights, lambda f: f.write(data))
    return weights


def state_path_of(weights: Path) -> Path:
    """The ``.state.pt`` beside a ``.safetensors`` weights file."""
    return weights.with_name(weights.name.removesuffix(".safetensors") + ".state.pt")


def resolve_checkpoint(path: Path) -> Path:
    """Accept a run directory, a stem or a ``.safetensors`` file; return the weights file."""
    path = Path(path)
    if path.is_dir():
        candidate = path / f"{LAST}.safetensors"
        if not candidate.exists():
            raise FileNotFoundError(f"{path} holds no {LAST}.safetensors; is it a maelab run directory?")
        return candidate
    if path.suffix != ".safetensors" and path.with_name(path.name + ".safetensors").exists():
        return path.with_name(path.name + ".safetensors")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path} is not a .safetensors file; maelab reads weights only from safetensors "
            "(pickled .pth files are never loaded with full pickle)"
        )
    return path


def read_meta(path: Path) -> CheckpointMeta:
    """Read a checkpoint's metadata without loading its tensors."""
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc})") from exc
    if FORMAT_KEY not in metadata:
        raise ValueError(f"{path} has no maelab metadata; it was not written by maelab")
    return CheckpointMeta.from_json(metadata[FORMAT_KEY])


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Load weights and metadata from a maelab safetensors checkpoint."""
    meta = read_meta(path)
    return load_file(str(resolve_checkpoint(path)), device=str(device)), meta


def load_train_state(weights_path: Path) -> dict:
    """Load the ``.state.pt`` beside a weights file, refusing anything but plain tensors and containers."""
    weights_path = resolve_checkpoint(weights_path)
    state_path = state_path_of(weights_path)
    if not state_path.exists():
        raise FileNotFoundError(f"no training state {state_path} beside {weights_path}; cannot resume from it")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as exc:
        raise ValueError(
            f"{state_path} is not a training state maelab can load safely: it holds something other than plain "
            f"tensors and containers, or it is damaged (refused by torch.load(weights_only=True): "
            f"{str(exc).splitlines()[0]}); nothing in it was executed"
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{state_path} does not hold a maelab training state (a dict); got {type(state).__name__}")
    saved_id = read_meta(weights_path).extra.get("save_id")
    if state.get("save_id") != saved_id:
        raise ValueError(
            f"{state_path} and {weights_path} come from different saves (a write was interrupted between "
            "them); an older checkpoint must be used"
        )
    return state
