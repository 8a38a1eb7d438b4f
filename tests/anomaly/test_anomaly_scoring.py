"""Complementary masks, per-patch errors in the model's target space, image scores and the kNN distance."""

from __future__ import annotations

import pytest
import torch

from maelab.anomaly.scoring import (
    complementary_masks,
    image_scores,
    knn_distance,
    knn_score,
    nearest_distances,
    patch_errors,
)
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
        others = [((model(imgs, mask=m.expand(3, -1)).pred - make_target(imgs, 8, target)) ** 2).mean(-1)
                  for m in masks]
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
    torch.testing.assert_close(knn_distance(bank, queries, k=2),
                               torch.tensor([1 - (1 + cos45) / 2, 1 - (0 - cos45) / 2]))
    assert knn_distance(bank, queries, k=10).shape == (2,)  # k capped at the bank
    with pytest.raises(ValueError):
        knn_distance(torch.zeros(0, 2), queries)
    # Euclidean: the mean L2 distance to the k nearest, as scikit-learn's NearestNeighbors finds them.
    from sklearn.neighbors import NearestNeighbors

    g = torch.Generator().manual_seed(5)
    bank, queries = torch.randn(50, 4, generator=g), 2 * torch.randn(7, 4, generator=g)
    dists, _ = NearestNeighbors(n_neighbors=3).fit(bank.numpy()).kneighbors(queries.numpy())
    torch.testing.assert_close(knn_distance(bank, queries, 3, "euclidean"), torch.from_numpy(dists.mean(1)).float(),
                               atol=1e-5, rtol=1e-5)
    # The k nearest, nearest first, whose mean is the score: a larger k only appends farther neighbours.
    nearest = nearest_distances(bank, queries, 10, "euclidean")  # (7, 10)
    assert nearest.shape == (7, 10) and (nearest.diff(dim=1) >= 0).all()
    torch.testing.assert_close(nearest[:, :3].mean(1), knn_distance(bank, queries, 3, "euclidean"))
    torch.testing.assert_close(nearest_distances(bank, queries, 4)[:, :2].mean(1), knn_distance(bank, queries, 2))
    with pytest.raises(ValueError, match="manhattan"):
        knn_distance(bank, queries, 3, "manhattan")


def test_knn_score_whitened_on_the_normal_bank():
    """Normal images spread along loud directions that anomalies share; the anomalies leave along a quiet one. The
    cosine distance follows the loud directions (near chance); whitened on the bank, the euclidean (Mahalanobis)
    distance finds them."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(4)

    def sample(n: int, shift: float) -> torch.Tensor:
        x = torch.randn(n, 6, generator=g) * 0.1  # (n, 6)
        x[:, 2:] += 100 * torch.randn(n, 4, generator=g)  # loud, shared by every image
        x[:, 0] += 5.0  # every embedding points the same way
        x[:, 1] += shift  # quiet: the anomalies leave the normal images here
        return x

    bank, queries = sample(400, 0.0), torch.cat([sample(100, 0.0), sample(100, 1.0)])  # (400, 6), (200, 6)
    anomalous = [0] * 100 + [1] * 100
    assert knn_score(bank, queries, 5, None).equal(knn_distance(bank, queries, 5))
    auroc = lambda scores: roc_auc_score(anomalous, scores.numpy())  # noqa: E731
    assert auroc(knn_score(bank, queries, 5, None)) < 0.65
    assert auroc(knn_score(bank, queries, 5, None, "euclidean")) < 0.65
    whitened = knn_score(bank, queries, 5, 6, "euclidean")
    assert auroc(whitened) > 0.99
    # It is the kNN distance after scikit-learn's PCA whitening fit on the bank (signs do not matter).
    pca = PCA(6, whiten=True, svd_solver="full").fit(bank.double().numpy())
    project = lambda x: torch.from_numpy(pca.transform(x.double().numpy())).float()  # noqa: E731
    for metric, scores in (("euclidean", whitened), ("cosine", knn_score(bank, queries, 5, 6))):
        torch.testing.assert_close(scores, knn_distance(project(bank), project(queries), 5, metric), atol=1e-5,
                                   rtol=1e-4)
    with pytest.raises(ValueError, match="--whiten 7"):
        knn_score(bank, queries, 5, 7)  # more components than the embedding has
    with pytest.raises(ValueError, match="at least one normal"):
        knn_score(torch.zeros(0, 6), queries, 5, 2)
