"""The loop's state in the middle of an epoch, as plain tensors and numbers.

Everything here survives ``torch.save`` / ``torch.load(weights_only=True)``: RNG states are
tensors (numpy's and python's are converted), everything else is ints, floats and dicts.
Together with the model, optimizer and the data order of :mod:`maelab.train.loader`
it makes a resumed run continue bit for bit where the stopped one left off.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Progress:
    """Counters the loop advances and checkpoints.

    ``epoch``: the current (or next) epoch; ``step``: optimizer steps so far; ``iter``:
    batches of ``epoch`` already trained on (0 at an epoch boundary).
    """

    epoch: int = 0
    step: int = 0
    iter: int = 0


@dataclass
class EpochSums:
    """Running sums of the current epoch, needed to log the same epoch record after a resume."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    batches: int = 0
    """Batches whose loss entered ``loss`` (skipped non-finite ones do not)."""
    seen: int = 0
    """Images trained on."""

    @classmethod
    def zeros(cls, device: torch.device) -> EpochSums:
        return cls(loss=torch.zeros((), device=device))

    def state_dict(self) -> dict[str, Any]:
        return dict(loss=self.loss.detach().cpu(), metrics={k: v.detach().cpu() for k, v in self.metrics.items()},
                    batches=self.batches, seen=self.seen)

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochSums:
        return cls(loss=state["loss"].to(device), metrics={k: v.to(device) for k, v in state["metrics"].items()},
                   batches=int(state["batches"]), seen=int(state["seen"]))


def capture_rng(mask_generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the training step may draw from: torch (CPU and CUDA), numpy, python, the mask generator."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos), has_gauss=int(has_gauss),
                      gauss=float(gauss)),
        "python": dict(version=int(version), internal=torch.tensor(internal, dtype=torch.int64),
                       gauss_next=gauss_next),
        "mask": mask_generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], mask_generator: torch.Generator) -> None:
    """Undo :func:`capture_rng`: set every RNG back to the captured state."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["internal"].tolist()), py_state["gauss_next"]))
    mask_generator.set_state(state["mask"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class LoopState:
    """What the loop adds to a checkpoint so it can continue mid-epoch."""

    rng: dict[str, Any] | None = None
    """Captured at the save point; ``None`` at an epoch boundary (each epoch reseeds)."""
    sums: EpochSums | None = None
    nonfinite_skipped: int = 0
    dataset_size: int = 0
    world_size: int = 1
    """Ranks of the run that saved: a mid-epoch position counts global batches of that many ranks."""
    steps_per_epoch: int = 0
    """Batches per epoch of the run that saved (0: not recorded): another world size changes it."""
    stream_workers: int | None = None
    """Streamed (sharded) data only: the loader workers the epoch's order was dealt to."""
    scaler: dict[str, Any] | None = None
    """``--amp fp16``'s GradScaler state (its loss scale and growth count): None without one."""

    def state_dict(self) -> dict[str, Any]:
        return dict(rng=self.rng, sums=None if self.sums is None else self.sums.state_dict(),
                    nonfinite_skipped=self.nonfinite_skipped, dataset_size=self.dataset_size,
                    world_size=self.world_size, steps_per_epoch=self.steps_per_epoch,
                    stream_workers=self.stream_workers, scaler=self.scaler)

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> LoopState:
        sums = state.get("sums")
        return cls(rng=state.get("rng"), sums=None if sums is None else EpochSums.from_state(sums, device),
                   nonfinite_skipped=int(state.get("nonfinite_skipped", 0)),
                   dataset_size=int(state.get("dataset_size", 0)), world_size=int(state.get("world_size", 1)),
                   steps_per_epoch=int(state.get("steps_per_epoch", 0)),
                   stream_workers=state.get("stream_workers"), scaler=state.get("scaler"))
