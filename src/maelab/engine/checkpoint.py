"""Checkpoints: weights as safetensors, resumable training state as a weights-only torch file.

A checkpoint is a pair of files sharing a stem:

* ``<stem>.safetensors`` holds every model tensor plus JSON metadata under the key
  ``"maelab"`` (kind, model config, data statistics, epoch). It is all that inference,
  reconstruction and evaluation need, and it is safe to load from anywhere.
* ``<stem>.state.pt`` (optional) holds optimizer and loop state for ``--resume``. It is
  read with ``torch.load(weights_only=True)``, which never runs pickled code.

Every file is written to a temporary name, fsynced and renamed, so a kill during a write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

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
        if isinstance(exc, OSError) and exc.errno == 28:
            raise OSError(exc.errno, f"disk full while writing {path}; the previous file is untouched") from exc
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
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
    # The training state goes first: a weights file newer than its state would resume wrongly.
    if train_state is not None:
        atomic_write(stem.with_name(stem.name + ".state.pt"), lambda f: torch.save(train_state, f))
    with tempfile.TemporaryDirectory(dir=weights.parent if weights.parent.exists() else None) as tmpdir:
        staging = Path(tmpdir) / "weights.safetensors"
        save_file(tensors, str(staging), metadata={FORMAT_KEY: meta.to_json()})
        data = staging.read_bytes()
    atomic_write(weights, lambda f: f.write(data))
    return weights


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
    state_path = weights_path.with_name(weights_path.name.removesuffix(".safetensors") + ".state.pt")
    if not state_path.exists():
        raise FileNotFoundError(f"no training state {state_path} beside {weights_path}; cannot resume from it")
    return torch.load(state_path, map_location="cpu", weights_only=True)
