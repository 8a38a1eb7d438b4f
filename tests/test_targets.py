import pytest
import torch

from maelab.targets import (
    default_pca_components,
    fit_pca,
    grid_shape,
    hog_cells,
    hog_dim,
    make_target,
    masked_mse,
    normalize_patches,
    patchify,
    pca_invert,
    pca_project,
    prediction_to_pixels,
    target_dim,
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
        make_target(imgs, 4, "dvae")


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


# ---------------------------------------------------------------------------- PCA target
def _correlated_patches(num: int = 4000, dim: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=gen)
    scales = torch.linspace(3.0, 0.1, dim)
    return (torch.randn(num, dim, generator=gen) * scales) @ mixing + torch.randn(dim, generator=gen) * 5


def test_pca_components_are_orthonormal_and_ordered():
    basis = fit_pca(_correlated_patches(), 6)
    assert basis.components.shape == (6, 16) and basis.mean.shape == (16,) and basis.std.shape == (16,)
    assert torch.allclose(basis.components @ basis.components.T, torch.eye(6), atol=1e-5)
    assert torch.all(basis.variance[:-1] >= basis.variance[1:])


def test_pca_standardizes_each_dimension_and_coefficients_have_the_fitted_variance():
    patches = _correlated_patches()
    basis = fit_pca(patches, 16)
    z = (patches - basis.mean) / basis.std
    assert torch.allclose(z.mean(0), torch.zeros(16), atol=1e-4)
    assert torch.allclose(z.var(0), torch.ones(16), atol=1e-4)
    coef = pca_project(patches, basis)
    assert torch.allclose(coef.mean(0), torch.zeros(16), atol=1e-3)
    assert torch.allclose(coef.var(0), basis.variance, rtol=1e-3, atol=1e-4)
    # Standardized dimensions: all components together carry the whole variance (P, up to eps).
    assert basis.variance.sum().item() == pytest.approx(16, rel=1e-4)


def test_pca_with_all_components_inverts_exactly_and_fewer_is_the_best_rank_k_fit():
    patches = _correlated_patches()
    full = fit_pca(patches, 16)
    assert torch.allclose(pca_invert(pca_project(patches, full), full), patches, atol=1e-3)
    errors = []
    for k in (2, 4, 8):
        basis = fit_pca(patches, k)
        back = pca_invert(pca_project(patches, basis), basis)
        z_err = ((back - patches) / basis.std).pow(2).sum(1).mean()
        # The residual of a rank-k PCA fit is exactly the discarded variance.
        assert z_err.item() == pytest.approx(full.variance[k:].sum().item(), rel=1e-2)
        errors.append(z_err.item())
    assert errors == sorted(errors, reverse=True)


def test_pca_target_shapes_and_pixels_round_trip():
    imgs = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    patches = patchify(imgs, 4).flatten(0, 1)  # (12, 32)
    basis = fit_pca(patches, 32)
    target = make_target(imgs, 4, "pca", pca=basis)
    assert target.shape == (3, 4, 32) == (3, 4, target_dim("pca", 4, 2, 32))
    assert torch.allclose(prediction_to_pixels(target, imgs, 4, "pca", basis), patchify(imgs, 4), atol=1e-4)
    with pytest.raises(ValueError, match="fitted basis"):
        make_target(imgs, 4, "pca")
    with pytest.raises(ValueError, match="pca_components must be between"):
        fit_pca(patches, 33)


def test_default_pca_components():
    assert default_pca_components(768) == 96  # the paper's ViT-B choice
    assert default_pca_components(16) == 4
    assert default_pca_components(3) == 3


# ---------------------------------------------------------------------------- HOG target
def test_hog_matches_scikit_image():
    from skimage import (
        feature as skimage_feature,  # a test dependency (the [test] extra)
    )

    gen = torch.Generator().manual_seed(0)
    img = torch.zeros(24, 16)
    # A constant 2-pixel border: scikit-image zeroes edge gradients, we replicate edge pixels;
    # on a constant border both give zero.
    img[2:22, 2:14] = torch.rand(20, 12, generator=gen)
    ref = skimage_feature.hog(img.double().numpy(), orientations=9, pixels_per_cell=(4, 4), cells_per_block=(1, 1),
                              block_norm="L2", feature_vector=False)  # (6, 4, 1, 1, 9)
    ref = torch.from_numpy(ref[:, :, 0, 0, :]).float().permute(2, 0, 1)  # (9, 6, 4)
    ours = hog_cells(img.view(1, 1, 24, 16), 4)[0, 0]  # (9, 6, 4)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_hog_of_hand_made_edges():
    # A vertical step edge: horizontal gradient, angle 0 -> bin 0 only.
    img = torch.zeros(1, 1, 8, 8)
    img[..., 4:] = 1.0
    hist = hog_cells(img, 4)  # (1, 1, 9, 2, 2)
    assert torch.allclose(hist[0, 0, 0], torch.ones(2, 2), atol=1e-4)
    assert torch.all(hist[0, 0, 1:] == 0)
    # A horizontal edge: vertical gradient, angle 90 -> bin 4 (80..100 degrees).
    hist = hog_cells(img.transpose(-1, -2), 4)
    assert torch.allclose(hist[0, 0, 4], torch.ones(2, 2), atol=1e-4)
    # A diagonal ramp: gradient at 45 degrees (rows grow downward) -> bin 2 (40..60) in the
    # middle cell (edge cells see the replicated border, where the gradient turns).
    ramp = torch.arange(12.0).view(1, 12) + torch.arange(12.0).view(12, 1)
    hist = hog_cells(ramp.view(1, 1, 12, 12), 4)  # (1, 1, 9, 3, 3)
    assert hist[0, 0, 2, 1, 1].item() == pytest.approx(1.0, abs=1e-4)
    assert hist[0, 0, :, 1, 1].sum().item() == pytest.approx(1.0, abs=1e-4)


def test_hog_is_invariant_to_brightness_and_contrast_after_normalization():
    imgs = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    base = make_target(imgs, 8, "hog")
    assert torch.allclose(make_target(imgs * 3.0, 8, "hog"), base, atol=1e-4)
    assert torch.allclose(make_target(imgs * 0.5 + 0.2, 8, "hog"), base, atol=1e-4)


def test_hog_patch_layout_and_dims():
    imgs = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(6))
    target = make_target(imgs, 8, "hog")
    # 8-pixel patches hold 2x2 cells of 4 pixels: 2*2*3*9 numbers per patch, 2x3 patches.
    assert target.shape == (2, 6, 108) and hog_dim(8, 3) == 108 == target_dim("hog", 8, 3, 0)
    cells = hog_cells(imgs, 4)  # (2, 3, 9, 4, 6)
    # Patch 4 = row 1, col 1; its cell (1, 0) is cell (3, 2) of the image; channel 2.
    start = (1 * 2 + 0) * 3 * 9 + 2 * 9
    assert torch.equal(target[1, 4, start:start + 9], cells[1, 2, :, 3, 2])
    assert hog_dim(5, 1) == 9  # odd patches are a single cell
    with pytest.raises(ValueError, match="cannot be turned back into pixels"):
        prediction_to_pixels(target, imgs, 8, "hog")
