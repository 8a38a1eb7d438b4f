"""Fixed 2-D sine-cosine position embeddings (not trained) and their resampling to a new grid."""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed


def sincos_1d(dim: int, positions: torch.Tensor, temperature: float = 10000.0) -> torch.Tensor:
    """1-D sin-cos embedding laid out [sin | cos].

    Args:
        dim: even embedding width.
        positions: (M,) positions.
    Returns:
        (M, dim) float64 embedding.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even; got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / temperature**omega  # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (M, dim)


def sincos_2d(dim: int, grid_size: tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """2-D sin-cos embedding for a (rows, cols) patch grid in row-major patch order.

    As in the paper's reference code, the first half of the channels encodes the column
    (x) index and the second half the row (y) index; an all-zero row is prepended for cls.

    Returns:
        (1 + rows*cols, dim) float32 if ``cls_token`` else (rows*cols, dim).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding width must be divisible by 4; got {dim}")
    rows, cols = grid_size
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")  # (h, w) each
    emb = torch.cat(
        [sincos_1d(dim // 2, xs.flatten()), sincos_1d(dim // 2, ys.flatten())], dim=1
    )  # (L, dim)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)  # (1 + L, dim)
    return emb.float()


def adapt_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """(1, 1 + L_old, D) -> (1, 1 + L_new, D) for a new patch grid (another resolution or patch size).

    maelab's (and the reference code's) fixed sin-cos table is recomputed exactly for the new
    grid; any other (e.g. a learned) table is interpolated with timm's ``resample_abs_pos_embed``
    (bicubic), the cls row kept as it is.
    """
    rows, cols = old_grid
    if pos_embed.ndim != 3 or pos_embed.shape[:2] != (1, 1 + rows * cols):
        raise ValueError(
            f"position embedding of shape {tuple(pos_embed.shape)} does not fit a {rows}x{cols} grid plus cls; "
            f"expected (1, {1 + rows * cols}, D)"
        )
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    dim = pos_embed.shape[-1]
    if dim % 4 == 0 and torch.allclose(pos_embed[0].float(), sincos_2d(dim, old_grid), atol=1e-6):
        return sincos_2d(dim, new_grid).unsqueeze(0).to(pos_embed.dtype)  # (1, 1 + L_new, D)
    return resample_abs_pos_embed(pos_embed, new_size=list(new_grid), old_size=list(old_grid), num_prefix_tokens=1)
