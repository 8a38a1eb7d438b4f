"""Anomaly scores: reconstruction error under complementary masks, and kNN distance to normal embeddings.

A model pre-trained on normal images reconstructs normal patches well and anomalous ones badly. To score every
patch, :func:`complementary_masks` splits the patches into K random groups (fixed by a seed, so every image gets
the same masks and the score is deterministic); pass k shows group k and hides the others (mask ratio 1 - 1/K:
0.75 for K = 4, the pre-training default). Every patch is hidden in K - 1 passes, and its error
(:func:`patch_errors`) is the mean squared error of its prediction in the model's own target space (normalized
pixels, pixels, PCA coefficients or HOG) over those passes. :func:`image_scores` reduces the patch errors to one
number per image; :func:`knn_distance` is the second, independent score (:func:`knn_score` optionally in
the space whitened on the normal images).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from maelab.evaluate.knn import pca_whitener
from maelab.targets import make_target

Reduction = Literal["top", "mean", "max"]
Metric = Literal["cosine", "euclidean"]
_CHUNK = 1024  # queries per similarity matrix: bounds memory at 1024 x N_bank floats


def complementary_masks(num_patches: int, groups: int, generator: torch.Generator) -> torch.Tensor:
    """(K, L) float masks, 1 = hidden: a random partition of the L patches into K groups (sizes differ by at most
    one); mask k keeps group k visible and hides every other patch, so each patch is hidden by K - 1 masks."""
    if not 2 <= groups <= num_patches:
        raise ValueError(f"--masks must be between 2 and the {num_patches} patches of an image; got {groups}")
    order = torch.randperm(num_patches, generator=generator)  # (L,)
    group = torch.empty(num_patches, dtype=torch.long)
    group[order] = torch.arange(num_patches) % groups  # (L,) each patch's group
    return (group.unsqueeze(0) != torch.arange(groups).unsqueeze(1)).float()  # (K, L)


@torch.no_grad()
def patch_errors(model: nn.Module, imgs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each patch's reconstruction error (B, L): the squared error of its prediction in the model's target space,
    averaged over the target's dimensions and over the ``masks`` (K, L) that hide it.

    Args:
        model: a MaskedAutoencoder or SimMIM in eval mode (``model(imgs, mask=...)`` predicts every patch).
        imgs: (B, C, H, W) normalized as the model was trained.
        masks: (K, L), 1 = hidden; every patch hidden by at least one of them.
    """
    cfg = model.config
    hidden = masks.sum(0)  # (L,)
    if not bool((hidden > 0).all()):
        raise ValueError("every patch must be hidden by at least one mask")
    basis = model.pca_basis() if cfg.target == "pca" else None
    with torch.autocast(imgs.device.type, enabled=False):
        target = make_target(imgs.float(), cfg.patch_size, cfg.target, pca=basis)  # (B, L, D)
    total = torch.zeros(target.shape[:2], device=imgs.device)  # (B, L)
    for mask in masks.to(imgs.device):
        pred = model(imgs, mask=mask.expand(imgs.shape[0], -1)).pred.float()  # (B, L, D)
        total += ((pred - target) ** 2).mean(-1) * mask  # (B, L), hidden patches only
    return total / hidden.to(imgs.device)  # (B, L)


def image_scores(errors: torch.Tensor, reduction: Reduction = "top", top_fraction: float = 0.1) -> torch.Tensor:
    """One score per image (B,) from its patch errors (B, L).

    "top": the mean of the ``top_fraction`` highest patch errors (at least one patch), the default: a small
    defect covers a few patches, which the mean over all of them would dilute, while the single worst patch
    ("max") is the noisiest estimate. "mean": the mean of every patch's error.
    """
    if reduction == "mean":
        return errors.mean(1)
    if reduction == "max":
        return errors.amax(1)
    if reduction != "top":
        raise ValueError(f"unknown --score {reduction!r}; choose top, mean or max")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"--top-fraction must be in (0, 1]; got {top_fraction}")
    count = max(1, math.ceil(top_fraction * errors.shape[1]))
    return errors.topk(count, dim=1).values.mean(1)  # (B,)


@torch.no_grad()
def nearest_distances(bank: torch.Tensor, queries: torch.Tensor, k: int = 5, metric: Metric = "cosine"
                      ) -> torch.Tensor:
    """(M, k) distances of each query (M, D) to its ``k`` nearest rows of the normal ``bank`` (N, D), nearest first;
    k is capped at N. "cosine": 1 - cosine similarity, blind to an embedding's length; "euclidean": the L2
    distance, which after whitening (:func:`knn_score`) is the Mahalanobis distance under the normal images'
    covariance."""
    if bank.shape[0] == 0:
        raise ValueError("the kNN score needs at least one normal training image")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown kNN distance {metric!r}; choose cosine or euclidean")
    normal = F.normalize(bank.float(), dim=1) if metric == "cosine" else bank.float()  # (N, D)
    k = min(k, normal.shape[0])
    out = []
    for start in range(0, queries.shape[0], _CHUNK):
        query = queries[start:start + _CHUNK].float().to(normal.device)  # (b, D)
        if metric == "cosine":
            out.append(1 - (F.normalize(query, dim=1) @ normal.T).topk(k, dim=1).values)  # (b, k)
        else:
            out.append(torch.cdist(query, normal).topk(k, dim=1, largest=False).values)  # (b, k)
    return torch.cat(out) if out else torch.zeros(0, k)


def knn_distance(bank: torch.Tensor, queries: torch.Tensor, k: int = 5, metric: Metric = "cosine") -> torch.Tensor:
    """(M,) mean distance of each query (M, D) to its ``k`` nearest normal embeddings (:func:`nearest_distances`)."""
    return nearest_distances(bank, queries, k, metric).mean(1)


def whitened(bank: torch.Tensor, queries: torch.Tensor, whiten: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The normal ``bank`` (N, D) and the ``queries`` (M, D) projected on the bank's top ``whiten`` principal
    components, each scaled to unit variance (:func:`maelab.evaluate.knn.pca_whitener`): (N, whiten), (M, whiten);
    unchanged when ``whiten`` is None."""
    if whiten is None:
        return bank, queries
    if bank.shape[0] == 0:
        raise ValueError("the kNN score needs at least one normal training image")
    project = pca_whitener(bank, whiten)
    return project(bank), project(queries)


def knn_score(bank: torch.Tensor, queries: torch.Tensor, k: int, whiten: int | None,
              metric: Metric = "cosine") -> torch.Tensor:
    """(M,) :func:`knn_distance` of the queries (M, D) to the normal ``bank`` (N, D), in the space whitened on the
    bank when ``whiten`` names a number of principal components."""
    return knn_distance(*whitened(bank, queries, whiten), k, metric)
