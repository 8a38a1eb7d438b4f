"""Deterministic synthetic images with learnable structure, for tests and smoke runs.

Four classes (label = index): horizontal stripes, vertical stripes, a disc and
a checkerboard, each with random frequency/phase/position, random per-channel
contrast and offset, and Gaussian noise. Generated in one vectorised pass from
a private ``torch.Generator``, so the global RNG is neither used nor disturbed.
"""

from __future__ import annotations

import functools
import logging
import math

import torch

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("horizontal_stripes", "vertical_stripes", "disc", "checkerboard")
NATIVE_SIZE = 32
NATIVE_CHANNELS = 1
SPLIT_SEEDS: dict[str, int] = {"train": 20210611, "test": 20210612}  # distinct seeds -> disjoint splits
NOISE_STD = 0.05
_STATS_SAMPLE = 256  # images used to estimate mean/std; plenty for 4 decimals


def generate(n: int, channels: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` images.

    Returns:
        images uint8 (n, channels, size, size) and labels int64 (n,), classes
        balanced to within one image.
    """
    assert n >= 1 and channels >= 1 and size >= 1, (n, channels, size)
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % len(CLASS_NAMES))[torch.randperm(n, generator=g)]

    # Coordinates in [0, 1), broadcast as (1, size, 1) rows and (1, 1, size) columns.
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = coords.view(1, size, 1), coords.view(1, 1, size)
    freq = torch.randint(2, 5, (n, 1, 1), generator=g).float()  # 2..4 cycles per image
    # Phases limited to half a turn: the class-mean images then keep a visible
    # pattern, which is what lets even a linear classifier separate the classes.
    phase_y = torch.rand(n, 1, 1, generator=g) * math.pi
    phase_x = torch.rand(n, 1, 1, generator=g) * math.pi
    wave_y = torch.cos(2 * math.pi * freq * y + phase_y)  # (n, size, 1)
    wave_x = torch.cos(2 * math.pi * freq * x + phase_x)  # (n, 1, size)

    centre_y = 0.5 + (torch.rand(n, 1, 1, generator=g) - 0.5) * 0.3
    centre_x = 0.5 + (torch.rand(n, 1, 1, generator=g) - 0.5) * 0.3
    radius = 0.15 + torch.rand(n, 1, 1, generator=g) * 0.2
    dist = torch.sqrt((y - centre_y) ** 2 + (x - centre_x) ** 2)
    # Soft edge about one pixel wide so the disc stays smooth at any size.
    disc = torch.sigmoid((radius - dist) * size * 2.0)

    patterns = torch.stack(
        [
            (0.5 + 0.5 * wave_y).expand(n, size, size),
            (0.5 + 0.5 * wave_x).expand(n, size, size),
            disc,
            (wave_y * wave_x > 0).float(),
        ],
        dim=1,
    )  # (n, 4, size, size)
    pattern = patterns[torch.arange(n), labels].unsqueeze(1)  # (n, 1, size, size)

    contrast = 0.6 + 0.4 * torch.rand(n, channels, 1, 1, generator=g)
    offset = torch.rand(n, channels, 1, 1, generator=g) * (1.0 - contrast)
    noise = torch.randn(n, channels, size, size, generator=g) * NOISE_STD
    images = (offset + contrast * pattern + noise).clamp_(0.0, 1.0)
    return (images * 255.0).round_().to(torch.uint8), labels


def generate_split(n_train: int, channels: int, size: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of ``split``; the test split holds ``max(1, n_train // 4)`` images.

    Returns:
        uint8 (N, channels, size, size) and int64 (N,).
    """
    n = n_train if split == "train" else max(1, n_train // 4)
    return generate(n, channels, size, SPLIT_SEEDS[split])


@functools.lru_cache(maxsize=16)  # tuples of floats: safe to share; saves repeat generation
def stats(channels: int, size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of train images in [0, 1], estimated on a fixed sample."""
    images, _ = generate(_STATS_SAMPLE, channels, size, SPLIT_SEEDS["train"])
    pixels = images.to(torch.float64).div_(255.0).transpose(0, 1).reshape(channels, -1)
    mean = tuple(round(float(m), 4) for m in pixels.mean(dim=1))
    std = tuple(round(float(s), 4) for s in pixels.std(dim=1))
    return mean, std
