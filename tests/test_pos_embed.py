import math

import pytest
import torch

from maelab.pos_embed import sincos_1d, sincos_2d


def test_sincos_1d_values():
    emb = sincos_1d(4, torch.tensor([0.0, 1.0, 2.0]))
    # omega = [1, 1/100] for dim 4: layout [sin(p), sin(p/100), cos(p), cos(p/100)].
    expected = torch.tensor([[math.sin(p), math.sin(p / 100), math.cos(p), math.cos(p / 100)] for p in (0, 1, 2)],
                            dtype=torch.float64)
    assert torch.allclose(emb, expected)


def test_sincos_2d_layout_and_cls_row():
    emb = sincos_2d(8, (2, 3))
    assert emb.shape == (7, 8)
    assert torch.all(emb[0] == 0)
    # Patch (row 1, col 2) is index 1*3 + 2; first half encodes the column, second the row.
    patch = emb[1 + 5]
    assert torch.allclose(patch[:4], sincos_1d(4, torch.tensor([2.0]))[0].float())
    assert torch.allclose(patch[4:], sincos_1d(4, torch.tensor([1.0]))[0].float())
    # Distinct positions get distinct embeddings.
    assert torch.unique(emb[1:], dim=0).shape[0] == 6


def test_sincos_2d_width_must_divide_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(6, (2, 2))
