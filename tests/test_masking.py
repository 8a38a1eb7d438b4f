import pytest
import torch

from maelab.masking import (
    block_masking,
    coarse_random_masking,
    grid_masking,
    mask_from_binary,
    num_visible,
    random_masking,
    sample_mask,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _check_structure(sample, batch, length, keep):
    assert sample.ids_keep.shape == (batch, keep)
    assert sample.ids_restore.shape == (batch, length)
    assert sample.mask.shape == (batch, length)
    # Kept count and binary values.
    assert torch.equal((sample.mask == 0).sum(1), torch.full((batch,), keep))
    assert set(sample.mask.unique().tolist()) <= {0.0, 1.0}
    # ids_keep points at exactly the visible patches.
    visible = torch.gather(sample.mask, 1, sample.ids_keep)
    assert torch.all(visible == 0)
    # ids_restore inverts the shuffle: [kept, masked] unshuffled gives the mask back.
    shuffled = torch.cat([torch.zeros(batch, keep), torch.ones(batch, length - keep)], dim=1)
    assert torch.equal(torch.gather(shuffled, 1, sample.ids_restore), sample.mask)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75, 0.9])
def test_random_masking_invariants(ratio):
    sample = random_masking(4, 49, ratio, _gen())
    _check_structure(sample, 4, 49, int(49 * (1 - ratio)))


def test_random_masking_matches_noise_argsort():
    noise = torch.rand(3, 16, generator=_gen(1))
    sample = random_masking(3, 16, 0.75, noise=noise)
    ids_shuffle = torch.argsort(noise, dim=1)
    assert torch.equal(sample.ids_keep, ids_shuffle[:, :4])
    assert torch.equal(sample.ids_restore, torch.argsort(ids_shuffle, dim=1))


def test_same_generator_same_mask_and_different_seed_differs():
    a = random_masking(8, 64, 0.75, _gen(3)).mask
    b = random_masking(8, 64, 0.75, _gen(3)).mask
    c = random_masking(8, 64, 0.75, _gen(4)).mask
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(block_masking(4, (8, 8), 0.5, _gen(3)).mask, block_masking(4, (8, 8), 0.5, _gen(3)).mask)


def test_random_masking_is_per_sample_and_uniform():
    masks = random_masking(4000, 16, 0.75, _gen()).mask
    freq = masks.mean(0)
    assert torch.allclose(freq, torch.full((16,), 0.75), atol=0.03)
    assert not torch.equal(masks[0], masks[1])


@pytest.mark.parametrize("ratio", [0.4, 0.5, 0.75])
def test_block_masking_exact_count(ratio):
    sample = block_masking(6, (7, 7), ratio, _gen())
    _check_structure(sample, 6, 49, num_visible(49, ratio))


def _components(grid: torch.Tensor) -> int:
    """Number of 4-connected components of True cells."""
    seen = torch.zeros_like(grid)
    rows, cols = grid.shape
    count = 0
    for r in range(rows):
        for c in range(cols):
            if grid[r, c] and not seen[r, c]:
                count += 1
                stack = [(r, c)]
                while stack:
                    y, x = stack.pop()
                    if 0 <= y < rows and 0 <= x < cols and grid[y, x] and not seen[y, x]:
                        seen[y, x] = True
                        stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
    return count


def test_block_masking_is_contiguous_unlike_random():
    block = block_masking(32, (14, 14), 0.5, _gen(5)).mask.view(32, 14, 14).bool()
    rand = random_masking(32, 196, 0.5, _gen(5)).mask.view(32, 14, 14).bool()
    block_parts = sum(_components(m) for m in block) / 32
    rand_parts = sum(_components(m) for m in rand) / 32
    # Blocks form a few large regions; uniform masking scatters into many small ones.
    assert block_parts < 8
    assert rand_parts > 3 * block_parts
    # A single block fits exactly when the count allows one rectangle.
    one = block_masking(1, (4, 4), 0.25, _gen(0), min_block=4, max_aspect=1.0).mask.view(4, 4).bool()
    assert _components(one) == 1
    rows, cols = one.any(1).nonzero(), one.any(0).nonzero()
    assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == 4


def test_grid_masking_keeps_exactly_one_quarter():
    sample = grid_masking(3, (8, 6))
    _check_structure(sample, 3, 48, 12)
    grid = sample.mask.view(3, 8, 6)
    assert torch.all(grid[:, ::2, ::2] == 0)
    assert grid.sum().item() == 3 * 36


def test_all_strategies_share_structure():
    for strategy in ("random", "block", "grid"):
        sample = sample_mask(strategy, 2, (4, 4), 0.75, _gen())
        _check_structure(sample, 2, 16, 4)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_invalid_ratio_is_value_error(ratio):
    with pytest.raises(ValueError, match="open interval"):
        random_masking(2, 16, ratio, _gen())


def test_ratio_leaving_nothing_visible():
    with pytest.raises(ValueError, match="no visible patch"):
        random_masking(2, 4, 0.8, _gen())


def test_impossible_grid_shapes():
    with pytest.raises(ValueError, match="even patch grid"):
        grid_masking(2, (7, 7))
    with pytest.raises(ValueError, match="0.75"):
        grid_masking(2, (8, 8), 0.5)
    with pytest.raises(ValueError, match="unknown mask strategy"):
        sample_mask("checker", 2, (4, 4), 0.75)


def test_mask_from_binary_keeps_patch_order_and_validates():
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 0]])
    sample = mask_from_binary(mask)
    assert torch.equal(sample.ids_keep, torch.tensor([[1, 3], [0, 3]]))
    assert torch.equal(sample.mask, mask)
    with pytest.raises(ValueError, match="same number"):
        mask_from_binary(torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0]]))
    with pytest.raises(ValueError, match="only 0"):
        mask_from_binary(torch.tensor([[0.5, 0, 1, 0]]))
    with pytest.raises(ValueError, match="every patch"):
        mask_from_binary(torch.ones(1, 4))


def test_coarse_mask_is_blockwise_with_simmim_count():
    mask = coarse_random_masking(64, (8, 8), 0.6, 2, torch.Generator().manual_seed(0))  # (B, 64)
    assert mask.shape == (64, 64)
    grid = mask.view(64, 8, 8)
    blocks = grid.view(64, 4, 2, 4, 2)
    # Every 2x2 block is all-masked or all-visible, and ceil(16 * 0.6) = 10 of 16 blocks are masked.
    assert torch.all(blocks.amin(dim=(2, 4)) == blocks.amax(dim=(2, 4)))
    assert torch.all(blocks.amax(dim=(2, 4)).sum(dim=(1, 2)) == 10)
    assert torch.all(mask.sum(1) == 40)
    # Uniform over blocks: every block is masked in roughly 10/16 of the samples.
    many = coarse_random_masking(4000, (8, 8), 0.6, 2, torch.Generator().manual_seed(1)).mean(0)
    assert torch.allclose(many, torch.full((64,), 10 / 16), atol=0.04)
    # Same generator seed, same mask.
    again = coarse_random_masking(64, (8, 8), 0.6, 2, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def test_coarse_mask_on_a_grid_the_block_does_not_divide():
    # Fashion: a 7x7 patch grid with 2x2 blocks -> a 4x4 block grid cropped to 7x7.
    mask = coarse_random_masking(500, (7, 7), 0.6, 2, torch.Generator().manual_seed(2))
    assert mask.shape == (500, 49)
    coarse = torch.zeros(500, 8, 8)
    coarse[:, :7, :7] = mask.view(500, 7, 7)
    blocks = coarse.view(500, 4, 2, 4, 2)[:, :3, :, :3, :]  # the whole blocks
    assert torch.all(blocks.amin(dim=(2, 4)) == blocks.amax(dim=(2, 4)))
    assert 0.5 < mask.mean().item() < 0.7 and mask.sum(1).min() > 0 and mask.sum(1).max() < 49
    with pytest.raises(ValueError, match="masks all"):
        coarse_random_masking(1, (2, 2), 0.9, 2)
