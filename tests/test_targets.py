import pytest
import torch

from maelab.targets import (
    grid_shape,
    make_target,
    masked_mse,
    normalize_patches,
    patchify,
    prediction_to_pixels,
    unpatchify,
)


@pytest.mark.parametrize("chans", [1, 3, 5])
@pytest.mark.parametrize("hw,p", [((28, 28), 4), ((32, 48), 8), ((16, 24), 4)])
def test_patchify_round_trip(chans, hw, p):
    imgs = torch.randn(2, chans, *hw, generator=torch.Generator().manual_seed(0))
    patches = patchify(imgs, p)
    rows, cols = grid_shape(hw, p)
    assert patches.shape == (2, rows * cols, p * p * chans)
    assert torch.equal(unpatchify(patches, p, (rows, cols), chans), imgs)


def test_patchify_layout_is_row_major_with_channels_last():
    imgs = torch.arange(2 * 4 * 6, dtype=torch.float32).view(1, 2, 4, 6)  # C=2, H=4, W=6
    patches = patchify(imgs, 2)  # grid 2x3
    # Patch index 1 is row 0, column 1: pixels (y 0..1, x 2..3); order (p, p, C).
    expected = torch.stack([imgs[0, :, y, x] for y in (0, 1) for x in (2, 3)]).flatten()
    assert torch.equal(patches[0, 1], expected)
    expected_row1 = torch.stack([imgs[0, :, y, x] for y in (2, 3) for x in (0, 1)]).flatten()
    assert torch.equal(patches[0, 3], expected_row1)


def test_patch_size_must_divide():
    with pytest.raises(ValueError, match="must divide"):
        patchify(torch.zeros(1, 1, 28, 28), 5)


def test_norm_pixel_target_statistics():
    imgs = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 5 + 2
    target = make_target(imgs, 4, "norm_pixel")
    assert torch.allclose(target.mean(-1), torch.zeros(2, 16), atol=1e-5)
    # Unbiased variance, eps 1e-6: the normalized patch has unbiased var ~ 1.
    assert torch.allclose(target.var(-1, unbiased=True), torch.ones(2, 16), atol=1e-3)
    with pytest.raises(ValueError, match="unknown target"):
        make_target(imgs, 4, "hog")


def test_masked_mse_counts_masked_patches_only():
    pred = torch.zeros(1, 4, 3)
    target = torch.tensor([[[1.0] * 3, [2.0] * 3, [3.0] * 3, [4.0] * 3]])
    mask = torch.tensor([[0.0, 1, 0, 1]])
    assert masked_mse(pred, target, mask).item() == pytest.approx((4 + 16) / 2)
    assert masked_mse(pred, target, mask, loss_on_all=True).item() == pytest.approx((1 + 4 + 9 + 16) / 4)


def test_norm_pixel_prediction_inverts_to_pixels():
    imgs = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    perfect = normalize_patches(patchify(imgs, 4))
    back = prediction_to_pixels(perfect, imgs, 4, "norm_pixel")
    assert torch.allclose(back, patchify(imgs, 4), atol=1e-4)
    assert torch.equal(prediction_to_pixels(perfect, imgs, 4, "pixel"), perfect)
