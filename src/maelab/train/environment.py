"""Where training runs: the device, the autocast dtype and this process's place in a torchrun
launch, resolved once per command and passed down (never global)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maelab.train.config import LoopConfig
from maelab.train.distributed import init_from_env


@dataclass(frozen=True)
class Environment:
    """Where training runs; returned by :func:`setup_environment`, never global."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU) or an explicit device; ValueError for CUDA without one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return device


def setup_environment(cfg: LoopConfig) -> Environment:
    """Resolve the device and autocast dtype from the loop config."""
    device = resolve_device(cfg.device)
    amp = None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda"):
        amp = torch.bfloat16
    device, dist_state = init_from_env(device)
    return Environment(device=device, amp_dtype=amp, rank=dist_state.rank, world_size=dist_state.world_size)
