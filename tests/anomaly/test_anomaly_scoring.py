"""Complementary masks, per-patch errors in the model's target space, image scores and the kNN distance."""

from __future__ import annotations

import pytest
import torch

from maelab.anomaly.scoring import complementary_masks, image_scores, knn_distance, patch_errors
from maelab.models import create_model
from maelab.targets import make_target


def test_complementary_masks_hide_every_patch_k_minus_1_times():
    masks = complementary_masks(64, 4, torch.Generator().manual_seed(0))
    assert masks.shape == (4, 64) and set(masks.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(masks.sum(0), torch.full((64,), 3.0))  # every patch hidden by K - 1 masks
    assert torch.equal(masks.sum(1), torch.full((4,), 48.0))  # mask ratio 1 - 1/K
    assert torch.equal(masks, complementary_masks(64, 4, torch.Generator().manual_seed(0)))
    assert not torch.equal(masks, complementary_masks(64, 4, torch.Generator().manual_seed(1)))
    uneven = complementary_masks(10, 3, torch.Generator().manual_seed(0))
    assert sorted((1 - uneven).sum(1).tolist()) == [3, 3, 4] and torch.equal(uneven.sum(0), torch.full((10,), 2.0))
    for groups in (1, 11):
        with pytest.raises(ValueError, match="--masks"):
            complementary_masks(10, groups, torch.Generator())


@pytest.mark.parametrize("target", ["norm_pixel", "pixel", "hog"])
def test_patch_errors_are_the_models_own_loss_patch_by_patch(target):
    torch.manual_seed(0)
    model = create_model("debug", target=target).eval()  # 4x4 patches
    imgs = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    masks = complementary_masks(16, 4, torch.Generator().manual_seed(2))
    errors = patch_errors(model, imgs, masks)
    assert errors.shape == (3, 16) and bool((errors > 0).all())
    with torch.no_grad():
        # The model's loss averages the hidden patches' errors; summed over the K passes, each patch counts K - 1 times.
        losses = sum(model(imgs, mask=m.expand(3, -1)).loss for m in masks)
        torch.testing.assert_close(errors.sum(1).mean() * 3 / 12, losses)
        # Patch by patch: each pass's prediction of the patches it hides, against the target.
        others = [((model(imgs, mask=m.expand(3, -1)).pred - make_target(imgs, 8, target)) ** 2).mean(-1) for m in masks]
    expected = sum(e * m for e, m in zip(others, masks)) / 3
    torch.testing.assert_close(errors, expected)


def test_image_scores_reduce_the_patch_errors():
    errors = torch.tensor([[1.0, 2.0, 3.0, 10.0], [4.0, 4.0, 4.0, 4.0]])
    torch.testing.assert_close(image_scores(errors, "mean"), torch.tensor([4.0, 4.0]))
    torch.testing.assert_close(image_scores(errors, "max"), torch.tensor([10.0, 4.0]))
    torch.testing.assert_close(image_scores(errors, "top", 0.5), torch.tensor([6.5, 4.0]))
    torch.testing.assert_close(image_scores(errors, "top", 0.01), torch.tensor([10.0, 4.0]))  # at least one patch
    torch.testing.assert_close(image_scores(errors, "top", 1.0), image_scores(errors, "mean"))
    with pytest.raises(ValueError):
        image_scores(errors, "median")


def test_knn_distance_is_the_mean_cosine_distance_to_the_k_nearest():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    queries = torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    torch.testing.assert_close(knn_distance(bank, queries, k=1), torch.tensor([0.0, 1.0]))
    cos45 = 2 ** -0.5
    torch.testing.assert_close(knn_distance(bank, queries, k=2), torch.tensor([1 - (1 + cos45) / 2, 1 - (0 - cos45) / 2]))
    assert knn_distance(bank, queries, k=10).shape == (2,)  # k capped at the bank
    with pytest.raises(ValueError):
        knn_distance(torch.zeros(0, 2), queries)
