"""Threshold-free detection metrics in NumPy: the ROC curve, AUROC and AUPRC (average precision).

Higher scores mean "more anomalous"; ``anomalous`` is 1 for an anomaly (the positive class). Tied scores are one
threshold, as in scikit-learn: a tie between a normal and an anomalous image counts one half in AUROC, and
average precision steps once per distinct score (``sum_n (R_n - R_{n-1}) P_n``, no interpolation), so the
numbers equal ``sklearn.metrics.roc_auc_score`` and ``average_precision_score`` (checked by the tests;
scikit-learn itself is only a test dependency).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    """How well one score separates anomalous from normal images."""

    auroc: float
    auprc: float
    fpr: np.ndarray
    """False-positive rates of the ROC curve, from 0 to 1, one point per distinct score."""
    tpr: np.ndarray
    """True-positive rates at the same thresholds."""


def _counts(scores: np.ndarray, anomalous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives (T,) when thresholding at each distinct score, highest first."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(anomalous).astype(bool).ravel()
    if scores.shape != positive.shape:
        raise ValueError(f"{scores.size} scores for {positive.size} labels")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if positive.all() or not positive.any():
        raise ValueError("AUROC and AUPRC need both normal and anomalous images")
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # (T,) last index of each distinct score
    tp = np.cumsum(positive)[last]
    return tp, (last + 1) - tp


def roc_curve(scores: np.ndarray, anomalous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr), each (T + 1,), starting at (0, 0) and ending at (1, 1)."""
    tp, fp = _counts(scores, anomalous)
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


def auroc(scores: np.ndarray, anomalous: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids: ties count one half)."""
    fpr, tpr = roc_curve(scores, anomalous)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(scores: np.ndarray, anomalous: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision: sum over thresholds of the recall gained
    times the precision there."""
    tp, fp = _counts(scores, anomalous)
    recall = np.r_[0.0, tp / tp[-1]]
    return float(np.sum(np.diff(recall) * tp / (tp + fp)))


def detection(scores: np.ndarray, anomalous: np.ndarray) -> Detection:
    """AUROC, AUPRC and the ROC curve of one score."""
    fpr, tpr = roc_curve(scores, anomalous)
    return Detection(auroc(scores, anomalous), average_precision(scores, anomalous), fpr, tpr)
