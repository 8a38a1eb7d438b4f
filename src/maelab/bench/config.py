"""Typed, frozen configuration of ``maelab bench`` (:mod:`maelab.bench.runner`): presets, batch sizes, variants."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from maelab.data import BadFileOptions
from maelab.models import get_config
from maelab.options import DeviceOptions

Variant = Literal["mae", "mask_tokens", "decoder1", "decoder8", "block_mask", "compile", "bf16", "grad_ckpt"]
VARIANTS: tuple[str, ...] = ("mae", "mask_tokens", "decoder1", "decoder8", "block_mask", "compile", "bf16", "grad_ckpt")
ALIASES = {
    "debug": "debug", "fashion": "mae_vit_fashion", "tiny": "mae_vit_tiny_patch16", "small": "mae_vit_small_patch16",
    "base": "mae_vit_base_patch16", "large": "mae_vit_large_patch16", "huge": "mae_vit_huge_patch14",
}


@dataclass(frozen=True)
class BenchConfig(BadFileOptions, DeviceOptions):
    """Which presets, batch sizes and variants to measure, and where to write the results."""

    models: tuple[str, ...] = ("fashion",)
    """Presets by registry name or short alias (debug, fashion, tiny, small, base, large, huge)."""
    batch_sizes: tuple[int, ...] = (8,)
    variants: tuple[Variant, ...] = ("mae", "mask_tokens", "decoder1")
    """mae: the preset as is (mask ratio from the preset, eager, fp32); every other variant changes one thing:
    mask_tokens (encoder sees all patches), decoder1/decoder8 (decoder depth), block_mask (block-wise mask
    sampling, a sequential loop on the host, instead of random), compile (torch.compile),
    bf16 (autocast, GPU only), grad_ckpt (activation checkpointing)."""
    steps: int = 5
    """Timed optimizer steps per case (the median step time is reported)."""
    warmup: int = 2
    """Untimed steps first (they include torch.compile's compilation)."""
    matmul_size: int = 2048
    """Side of the square fp32 matmul timed for the device's peak (CPU; GPUs use at least 8192)."""
    loader: bool = False
    """Also time the data loader alone on --dataset (images/s, no model)."""
    dataset: str = "fashion_mnist"
    data: Path | None = None
    """--dataset's directory for --loader (needed for folder; a folder adds the --decode-on-device path)."""
    loader_workers: int = 0
    output: Path = Path("bench")
    """Stem of the outputs: writes <output>.json and <output>.md."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1 or self.warmup < 0:
            raise ValueError(f"--steps must be >= 1 and --warmup >= 0; got {self.steps} and {self.warmup}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"--batch-sizes must be positive integers; got {self.batch_sizes}")
        for name in self.models:
            resolve_model(name)
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"unknown variants {bad}; choose from {', '.join(VARIANTS)}")


def resolve_model(name: str) -> str:
    """A short alias or registry name -> the registry name (ValueError naming the choices)."""
    full = ALIASES.get(name, name)
    get_config(full)
    return full
