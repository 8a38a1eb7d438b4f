"""The probe's L2 search ends at an interior optimum: a best C at the grid's edge extends the grid past it."""

from __future__ import annotations

import math

import pytest
import torch

from maelab.evaluate import logistic
from maelab.evaluate.logistic import C_GRID, C_LIMITS, LinearFit, solve_probe


def _peaked_at(monkeypatch, best_c: float) -> None:
    """Fits that remember their C (as the loss), and a validation accuracy that peaks at ``best_c``."""
    def fake_fit(z, labels, num_classes, c, init=None, **_):
        return LinearFit(torch.zeros(num_classes, z.shape[1]), torch.zeros(num_classes), 1, c, True)

    monkeypatch.setattr(logistic, "fit_logistic", fake_fit)
    monkeypatch.setattr(logistic, "accuracy", lambda fit, z, y: 90.0 - abs(math.log10(fit.loss / best_c)))


def _data():
    feats, labels = torch.randn(20, 3), torch.arange(20) % 2
    return (feats, labels), (feats, labels)


@pytest.mark.parametrize("best_c", [1e4, 1e-5, 1.0, 100.0])
def test_the_search_reaches_the_interior_optimum(monkeypatch, best_c):
    _peaked_at(monkeypatch, best_c)
    train, val = _data()
    solution = solve_probe(train, val, 2, 1e-6)
    assert solution.c == pytest.approx(best_c)
    tried = [row["c"] for row in solution.search]
    assert tried == sorted(tried)
    # The optimum has a tried neighbour on each side (an interior optimum), unless it sits at C_LIMITS.
    assert min(tried) < best_c < max(tried)
    if best_c in C_GRID[1:-1]:
        assert max(tried) <= C_GRID[-1] and min(tried) >= C_GRID[0]  # the grid alone decides: nothing added


def test_the_search_stops_at_its_limits(monkeypatch):
    _peaked_at(monkeypatch, 1e9)
    solution = solve_probe(*_data(), 2, 1e-6)
    assert solution.c == pytest.approx(C_LIMITS[1])


def test_statistics_can_come_from_unlabeled_images():
    (feats, labels), val = _data()
    pool = torch.randn(200, 3) * 5 + 2
    solution = solve_probe((feats, labels), val, 2, 1e-6, c=1.0, stats_from=pool)
    torch.testing.assert_close(solution.standardizer.mean, pool.mean(0))
