"""Fixed 2-D sine-cosine position embeddings (not trained)."""

from __future__ import annotations

import torch


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
