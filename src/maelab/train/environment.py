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


def mps_available() -> bool:
    """Apple's Metal GPU (MPS): macOS on Apple silicon with a PyTorch built for it."""
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA, else Apple's MPS, else the CPU; or an explicit device (ValueError when it is not here)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use {DEVICE_CHOICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} was asked for but no CUDA device is available; use --device auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s) here "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not mps_available():
        raise ValueError("--device mps was asked for but Apple's MPS is not available here (it needs macOS on "
                         "Apple silicon); use --device auto or cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: maelab runs on {DEVICE_CHOICES}")
    return device


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp mode`` on ``device`` (None: float32)."""
    if mode == "auto":
        if device.type != "cuda":
            return None
        # Emulated bf16 (GPUs before Ampere) is slow: those get fp16 with a gradient scaler instead.
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


def setup_environment(cfg: LoopConfig) -> Environment:
    """Resolve the device and autocast dtype from the loop config."""
    device = resolve_device(cfg.device)
    amp = amp_dtype(cfg.amp, device)
    device, dist_state = init_from_env(device)
    return Environment(device=device, amp_dtype=amp, rank=dist_state.rank, world_size=dist_state.world_size)
