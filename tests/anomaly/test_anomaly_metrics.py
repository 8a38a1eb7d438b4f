"""AUROC and AUPRC computed in NumPy equal scikit-learn's, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from maelab.anomaly.metrics import auroc, average_precision, detection
from maelab.anomaly.metrics import roc_curve as our_roc_curve


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_auprc_match_scikit_learn(ties):
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 80))
        labels = rng.integers(0, 2, n)
        labels[:2] = (0, 1)
        scores = rng.integers(0, 4, n).astype(float) if ties else rng.normal(size=n) + labels
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        ours = our_roc_curve(scores, labels)
        np.testing.assert_allclose(ours[0], fpr)
        np.testing.assert_allclose(ours[1], tpr)


def test_extremes_and_refusals():
    labels = np.array([0, 0, 1, 1])
    perfect = detection(np.array([0.1, 0.2, 0.8, 0.9]), labels)
    assert perfect.auroc == 1.0 and perfect.auprc == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert auroc(np.ones(4), labels) == 0.5 and average_precision(np.ones(4), labels) == 0.5
    with pytest.raises(ValueError, match="both"):
        auroc(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="finite"):
        auroc(np.array([0.1, np.nan]), np.array([0, 1]))
