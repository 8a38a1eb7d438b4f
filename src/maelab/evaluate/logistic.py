"""The linear probe solved to its optimum: L2-regularized multinomial logistic regression on
standardized frozen features, full-batch L-BFGS, its L2 strength chosen on the validation split.

On cached features the probe is a convex problem, so an optimizer schedule (the paper's LARS,
tuned for batch 16,384 on 1.28M images) is only a way of not reaching its optimum at other batch
sizes. The objective is scikit-learn's ``LogisticRegression`` (lbfgs, multinomial) with
``C``: ``C * sum(cross-entropy) + ||W||^2 / 2``, here divided by the number of images; the bias
is not penalized. Standardizing with the training features' mean and variance is exactly the
probe head's BatchNorm (affine=False) in eval mode, so the result loads into that head as is.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
"""Inverse L2 strengths tried on the validation split (scikit-learn's ``C``), strongest regularization first;
the search stops at the first C whose validation accuracy is below the best so far (weaker regularization
only costs more iterations from there, and validation accuracy falls off on both sides of its peak). A best C
at either end of the grid is not an optimum but the grid's edge: the search then goes on past it by factors of
10, up to :data:`C_LIMITS`, until validation accuracy stops rising."""
C_LIMITS = (1e-6, 1e6)
MAX_ITER = 500
# Stop once no gradient entry of the mean objective exceeds this: the predictions have settled long before
# (the test against scikit-learn holds at this value); a tighter value only moves the loss's last digits.
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and variance of the training features (the BatchNorm's running statistics)."""

    mean: torch.Tensor
    var: torch.Tensor
    eps: float

    @classmethod
    def fit(cls, feats: torch.Tensor, eps: float) -> Standardizer:
        var = feats.var(0, unbiased=False)  # (D,)
        # A feature constant on the training images (e.g. an always-black border pixel) is left unscaled, as
        # scikit-learn's StandardScaler does: dividing by sqrt(eps) would blow up its test values 1000-fold.
        var = torch.where(var > 1e-10, var, torch.full_like(var, 1.0 - eps))
        return cls(feats.mean(0), var, eps)  # (D,), (D,)

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) / torch.sqrt(self.var + self.eps)  # (N, D)


@dataclass(frozen=True)
class LinearFit:
    weight: torch.Tensor
    """(C, D)"""
    bias: torch.Tensor
    """(C,)"""
    iterations: int
    loss: float
    converged: bool
    """False when the iteration or evaluation limit stopped the solve before it settled."""

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.T + self.bias  # (N, C)


def fit_logistic(
    z: torch.Tensor, labels: torch.Tensor, num_classes: int, c: float, init: LinearFit | None = None,
    max_iter: int = MAX_ITER, tolerance: float = TOLERANCE,
) -> LinearFit:
    """Minimize mean cross-entropy + ||W||^2 / (2 C N) over standardized features ``z`` (N, D).

    Full-batch L-BFGS with a strong-Wolfe line search, stopped when no gradient entry exceeds
    ``tolerance``; ``init`` warm-starts it (from a neighbouring C).
    """
    n, dim = z.shape
    weight = torch.zeros(num_classes, dim, dtype=z.dtype, device=z.device) if init is None else init.weight.clone()
    bias = torch.zeros(num_classes, dtype=z.dtype, device=z.device) if init is None else init.bias.clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    l2 = 1.0 / (2.0 * c * n)
    max_evals = 2 * max_iter  # line-search evaluations included
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, max_eval=max_evals, history_size=20,
                                  tolerance_grad=tolerance, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    labels = labels.to(z.device).long()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)  # returns the loss at the start; the final one is evaluated below
    state = optimizer.state[weight]
    iterations, evaluations = state.get("n_iter", 0), state.get("func_evals", 0)
    with torch.no_grad():
        loss = F.cross_entropy(z @ weight.T + bias, labels) + l2 * weight.pow(2).sum()
    # L-BFGS stops at the gradient tolerance, when the loss no longer changes, or at a limit; only the last is short.
    converged = iterations < max_iter and evaluations < max_evals
    return LinearFit(weight.detach(), bias.detach(), int(iterations), float(loss), converged)


def accuracy(fit: LinearFit, z: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((fit.logits(z).argmax(1) == labels.to(z.device)).float().mean())


@dataclass(frozen=True)
class ProbeSolution:
    """The chosen fit and how it was chosen."""

    standardizer: Standardizer
    fit: LinearFit
    c: float
    search: list[dict[str, float]]
    """One row per C tried: c, val_top1 (when a validation split exists), iterations, loss."""


def solve_probe(
    train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor] | None, num_classes: int,
    eps: float, c_grid: tuple[float, ...] = C_GRID, c: float | None = None, stats_from: torch.Tensor | None = None,
) -> ProbeSolution:
    """Standardize on ``train``, fit the C of ``c_grid`` in order (or the given ``c``) and keep the best on ``val``.

    Without a validation split nothing can be chosen: ``c`` must be given (or C = 1, scikit-learn's default).
    ``stats_from`` (N', D): standardize with these features' statistics instead, e.g. every training image's
    when only a few carry labels (the statistics need no label, and a few images estimate them poorly).
    The statistics are taken in float64, the fits run in float32 on the features' device.
    """
    feats, labels = train[0], train[1]
    stats = Standardizer.fit((feats if stats_from is None else stats_from).double(), eps)
    standardizer = Standardizer(stats.mean.float(), stats.var.float(), eps)
    z = standardizer(feats.float())
    grid = [c] if c is not None else (list(c_grid) if val is not None else [1.0])
    z_val = standardizer(val[0].float().to(z.device)) if val is not None else None
    best = _search(z, labels, z_val, val[1] if val is not None else None, num_classes, grid, None)
    if val is not None and c is None and best[1] == grid[-1] and best[1] * 10 <= C_LIMITS[1]:
        # Still rising at the weak end of the grid: go on up from the best fit.
        best = _search(z, labels, z_val, val[1], num_classes, _decades(best[1], 10), best)
    if val is not None and c is None and best[1] == grid[0] and best[1] / 10 >= C_LIMITS[0]:
        best = _search(z, labels, z_val, val[1], num_classes, _decades(best[1], 0.1), best)
    search = sorted(best[3], key=lambda row: row["c"])
    return ProbeSolution(standardizer, best[2], best[1], search)


def _decades(start: float, factor: float) -> list[float]:
    """``start * factor``, ``start * factor**2``, ... within :data:`C_LIMITS`."""
    values, value = [], start * factor
    while C_LIMITS[0] * (1 - 1e-9) <= value <= C_LIMITS[1] * (1 + 1e-9):
        values.append(value)
        value *= factor
    return values


def _search(z: torch.Tensor, labels: torch.Tensor, z_val: torch.Tensor | None, val_labels: torch.Tensor | None,
            num_classes: int, grid: list[float], start: tuple | None) -> tuple[float, float, LinearFit, list[dict]]:
    """Fit the C of ``grid`` in order, each warm-started from the previous, until validation accuracy falls below
    the best so far: (best score, its C, its fit, every row tried). ``start``, an earlier search's result, is the
    best so far and its rows come first."""
    best = start[:3] if start is not None else None
    search, previous = (list(start[3]) if start is not None else []), (start[2] if start is not None else None)
    for value in grid:
        fit = fit_logistic(z, labels, num_classes, value, init=previous)
        previous = fit
        row = dict(c=value, iterations=fit.iterations, loss=fit.loss, converged=fit.converged)
        if z_val is not None:
            row["val_top1"] = accuracy(fit, z_val, val_labels)
        search.append(row)
        score = row.get("val_top1", -math.inf)
        logger.info("probe C=%g: %d L-BFGS iterations%s, loss %.4f%s", value, fit.iterations,
                    "" if fit.converged else " (the limit: stopped short of the gradient tolerance)", fit.loss,
                    f", val top-1 {score:.2f}%" if z_val is not None else "")
        if best is not None and score < best[0]:
            break
        if best is None or score > best[0]:
            best = (score, value, fit)
    assert best is not None
    return (*best, search)


def load_into_head(solution: ProbeSolution, head: nn.Sequential) -> None:
    """Write the solution into a BatchNorm1d(affine=False) + Linear probe head (eval mode uses these statistics)."""
    bn, fc = head[0], head[-1]
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and bn.eps == solution.standardizer.eps, bn
    with torch.no_grad():
        bn.running_mean.copy_(solution.standardizer.mean)
        bn.running_var.copy_(solution.standardizer.var)
        fc.weight.copy_(solution.fit.weight)
        fc.bias.copy_(solution.fit.bias)
