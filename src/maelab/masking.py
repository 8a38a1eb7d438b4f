"""Mask sampling: which patches the encoder sees.

Every strategy returns the same :class:`MaskSample`, so the model never needs to know
how a mask was drawn. Convention (as in the paper's reference code): ``mask`` is 0 for a
kept (visible) patch and 1 for a removed one, in the original patch order.

All functions are pure: randomness comes only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

import torch

MaskStrategy = Literal["random", "block", "grid"]
MASK_STRATEGIES: tuple[str, ...] = ("random", "block", "grid")


@dataclass(frozen=True)
class MaskSample:
    """A batch of masks with the index bookkeeping the model needs.

    Attributes:
        ids_keep: (B, L_keep) indices of visible patches, in the order the encoder sees them.
        ids_restore: (B, L) permutation that puts [visible, masked] back into patch order.
        mask: (B, L) float, 0 = visible, 1 = masked, in patch order.
    """

    ids_keep: torch.Tensor
    ids_restore: torch.Tensor
    mask: torch.Tensor

    @property
    def num_keep(self) -> int:
        return self.ids_keep.shape[1]


def check_mask_ratio(mask_ratio: float, name: str = "mask_ratio") -> None:
    """The one range check of a mask ratio; ``name`` is how the caller's user spells it (e.g. ``--mask-ratio``)."""
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"{name} must be in the open interval (0, 1), e.g. 0.75 (the paper's); got {mask_ratio}")


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Number of visible patches for a ratio, as the reference code counts it: int(L * (1 - r))."""
    check_mask_ratio(mask_ratio)
    keep = int(num_patches * (1.0 - mask_ratio))
    if keep < 1:
        raise ValueError(
            f"mask_ratio={mask_ratio} leaves no visible patch out of {num_patches}; "
            f"use a ratio below {1.0 - 1.0 / num_patches:.4f} or smaller patches"
        )
    return keep


def _from_shuffle(ids_shuffle: torch.Tensor, num_keep: int) -> MaskSample:
    """Build a MaskSample from a per-sample permutation whose first ``num_keep`` entries are kept."""
    batch, length = ids_shuffle.shape
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, L)
    ids_keep = ids_shuffle[:, :num_keep]  # (B, L_keep)
    mask = torch.ones(batch, length, device=ids_shuffle.device)  # (B, L) in shuffled order
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # (B, L) in patch order
    return MaskSample(ids_keep=ids_keep, ids_restore=ids_restore, mask=mask)


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    noise: torch.Tensor | None = None,
) -> MaskSample:
    """Uniform random masking without replacement (the paper's default).

    Per-sample noise ~ U(0, 1) is argsorted; the lowest ``int(L * (1 - r))`` are kept.
    ``noise`` (B, L) may be given to reproduce another implementation's mask exactly.
    """
    num_keep = num_visible(num_patches, mask_ratio)
    if noise is None:
        if generator is not None:
            device = generator.device
        noise = torch.rand(batch, num_patches, generator=generator, device=device)  # (B, L)
    elif noise.shape != (batch, num_patches):
        raise ValueError(f"noise must have shape {(batch, num_patches)}; got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise, dim=1)  # (B, L), ascending: small noise is kept
    return _from_shuffle(ids_shuffle, num_keep)


def mask_from_binary(mask: torch.Tensor) -> MaskSample:
    """Turn an explicit binary mask (B, L), 1 = masked, into a MaskSample.

    Every row must mask the same number of patches, because the encoder runs on a
    dense (B, L_keep, D) tensor. Visible patches keep their original order.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (batch, num_patches); got {tuple(mask.shape)}")
    binary = mask.to(torch.bool)
    if not torch.equal(binary.to(mask.dtype), mask):
        raise ValueError("mask must hold only 0 (visible) and 1 (masked)")
    counts = (~binary).sum(dim=1)
    if counts.numel() and not bool((counts == counts[0]).all()):
        raise ValueError(
            f"every sample must keep the same number of patches; got counts {counts.tolist()}"
        )
    num_keep = int(counts[0]) if counts.numel() else 0
    if num_keep < 1:
        raise ValueError("mask hides every patch; at least one patch must stay visible")
    # Stable sort puts visible (0) before masked (1) and keeps patch order within each group.
    ids_shuffle = torch.sort(binary.to(torch.uint8), dim=1, stable=True).indices  # (B, L)
    return _from_shuffle(ids_shuffle, num_keep)


@dataclass(frozen=True)
class PixelMask:
    """A mask for models that see every patch (SimMIM): no index bookkeeping, so the number of
    masked patches may differ between samples.

    Attributes:
        mask: (B, L) float, 0 = visible, 1 = masked, in patch order.
    """

    mask: torch.Tensor


def coarse_random_masking(
    batch: int,
    grid_size: tuple[int, int],
    mask_ratio: float,
    mask_patch: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """SimMIM's masks: random on a coarse grid of ``mask_patch`` x ``mask_patch`` patch blocks.

    ``ceil(N_c * r)`` of the N_c = ceil(h / m) * ceil(w / m) blocks are masked (SimMIM's count),
    uniformly without replacement, and each block masks all its patches. When ``mask_patch`` does
    not divide the grid, the coarse grid overhangs the bottom/right edge and is cropped, so the
    fraction of masked patches varies a little between samples.

    Returns:
        (B, L) float mask, 1 = masked, in patch order.
    """
    rows, cols = _check_grid(grid_size)
    if mask_patch < 1:
        raise ValueError(f"mask_patch_size must be at least 1 patch; got {mask_patch}")
    check_mask_ratio(mask_ratio)
    coarse_rows, coarse_cols = -(-rows // mask_patch), -(-cols // mask_patch)
    num_coarse = coarse_rows * coarse_cols
    num_mask = math.ceil(num_coarse * mask_ratio)
    if num_mask >= num_coarse:
        raise ValueError(
            f"mask_ratio={mask_ratio} masks all {num_coarse} mask blocks; lower it or use a smaller mask_patch_size"
        )
    if generator is not None:
        device = generator.device
    noise = torch.rand(batch, num_coarse, generator=generator, device=device)  # (B, N_c)
    ranks = torch.argsort(torch.argsort(noise, dim=1), dim=1)  # (B, N_c) rank of each block
    coarse = (ranks < num_mask).float().view(batch, coarse_rows, coarse_cols)  # (B, h_c, w_c)
    fine = coarse.repeat_interleave(mask_patch, 1).repeat_interleave(mask_patch, 2)  # (B, h_c*m, w_c*m)
    return fine[:, :rows, :cols].reshape(batch, rows * cols)  # (B, L)


def _check_grid(grid_size: tuple[int, int]) -> tuple[int, int]:
    rows, cols = grid_size
    if rows < 1 or cols < 1:
        raise ValueError(f"patch grid must be at least 1x1; got {rows}x{cols}")
    return rows, cols


def block_masking(
    batch: int,
    grid_size: tuple[int, int],
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    min_block: int = 4,
    max_aspect: float = 3.0,
) -> MaskSample:
    """BEiT-style block-wise masking: random rectangles until the ratio is reached.

    Each rectangle has area drawn in [min_block, remaining] and log-uniform aspect ratio in
    [1/max_aspect, max_aspect]; only rectangles that add new masked patches without
    overshooting are accepted, so every sample masks exactly ``L - int(L * (1 - r))``.
    When the remaining count is smaller than ``min_block`` the blocks shrink to fit.
    """
    rows, cols = _check_grid(grid_size)
    length = rows * cols
    num_mask = length - num_visible(length, mask_ratio)
    if generator is not None:
        device = generator.device
    # The rejection loop is sequential, so it runs in plain Python on integer bitmasks (bit r * cols + c is
    # patch (r, c)) with a Python RNG seeded from the caller's generator: one torch op per draw on
    # 1-element tensors made this loop cost about a tenth of a small model's CPU training step (29 ms of 0.31 s).
    rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item()))
    rects: dict[tuple[int, int, int, int], int] = {}
    log_aspect = (math.log(1.0 / max_aspect), math.log(max_aspect))
    rows_out = []
    for _ in range(batch):
        bits = 0
        count = 0
        while count < num_mask:
            remaining = num_mask - count
            low = min(min_block, remaining)
            added = 0
            for _ in range(10):
                area = low + rng.random() * (remaining - low)
                aspect = math.exp(log_aspect[0] + rng.random() * (log_aspect[1] - log_aspect[0]))
                h = max(1, min(rows, int(round(math.sqrt(area * aspect)))))
                w = max(1, min(cols, int(round(math.sqrt(area / aspect)))))
                top, left = int(rng.random() * (rows - h + 1)), int(rng.random() * (cols - w + 1))
                key = (h, w, top, left)
                if key not in rects:
                    rects[key] = sum(((1 << w) - 1) << (r * cols + left) for r in range(top, top + h))
                new = (rects[key] & ~bits).bit_count()
                if 0 < new <= remaining:
                    bits |= rects[key]
                    added = new
                    break
            if added == 0:
                # No rectangle fit in ten tries: mask one unmasked patch so the loop
                # always terminates with the exact count.
                bits |= 1 << rng.choice([i for i in range(length) if not bits >> i & 1])
                added = 1
            count += added
        rows_out.append([bits >> i & 1 for i in range(length)])
    binary = torch.tensor(rows_out, dtype=torch.float32, device=device).reshape(batch, length)  # (B, L)
    return mask_from_binary(binary)


def check_grid_masking(grid_size: tuple[int, int], mask_ratio: float) -> tuple[int, int]:
    """ValueError unless grid masking can keep exactly one patch of every 2x2 group; returns (rows, cols)."""
    rows, cols = _check_grid(grid_size)
    if abs(mask_ratio - 0.75) > 1e-9:
        raise ValueError(f"grid masking keeps one of every 2x2 patches, so mask_ratio must be 0.75; got {mask_ratio}")
    if rows % 2 or cols % 2:
        raise ValueError(
            f"grid masking needs an even patch grid to keep exactly 1/4; got {rows}x{cols} "
            "patches: choose an image size / patch size giving even sides, or use 'random'"
        )
    return rows, cols


def grid_masking(
    batch: int,
    grid_size: tuple[int, int],
    mask_ratio: float = 0.75,
    device: torch.device | str | None = None,
) -> MaskSample:
    """Regular grid masking: keep the top-left patch of every 2x2 cell (75% masked).

    The ratio is fixed by the pattern, so only 0.75 is accepted, and the patch grid must
    have even sides for exactly one in four patches to stay visible.
    """
    rows, cols = check_grid_masking(grid_size, mask_ratio)
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    keep = (r[:, None] % 2 == 0) & (c[None, :] % 2 == 0)  # (h, w)
    binary = (~keep).flatten().float().expand(batch, -1).contiguous()  # (B, L)
    return mask_from_binary(binary)


def sample_mask(
    strategy: str,
    batch: int,
    grid_size: tuple[int, int],
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskSample:
    """Dispatch to a strategy by name ("random", "block" or "grid")."""
    rows, cols = _check_grid(grid_size)
    if generator is not None:
        device = generator.device
    if strategy == "random":
        return random_masking(batch, rows * cols, mask_ratio, generator, device)
    if strategy == "block":
        return block_masking(batch, (rows, cols), mask_ratio, generator, device)
    if strategy == "grid":
        return grid_masking(batch, (rows, cols), mask_ratio, device)
    raise ValueError(f"unknown mask strategy {strategy!r}; choose one of {', '.join(MASK_STRATEGIES)}")
