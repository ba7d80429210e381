"""Detection metrics: ROC curve, AUROC, TPR at a fixed false-positive rate (negatives = clean images)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve = P(score(positive) > score(negative)), ties counting one half."""
    negatives, positives = np.asarray(negatives, np.float64), np.asarray(positives, np.float64)
    if len(negatives) == 0 or len(positives) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([negatives, positives]))
    rank_sum = ranks[len(negatives) :].sum()
    return float((rank_sum - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives)))


def roc_curve(negatives: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0,0) to (1,1); "positive" means score >= threshold."""
    scores = np.concatenate([negatives, positives]).astype(np.float64)
    labels = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tp = np.cumsum(labels)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    fpr = np.r_[0.0, fp / max(len(negatives), 1)]
    tpr = np.r_[0.0, tp / max(len(positives), 1)]
    return fpr, tpr


def tpr_at_fpr(negatives: np.ndarray, positives: np.ndarray, max_fpr: float = 0.05) -> float:
    """The highest true-positive rate among thresholds whose false-positive rate is at most `max_fpr`."""
    if len(negatives) == 0 or len(positives) == 0:
        return float("nan")
    fpr, tpr = roc_curve(negatives, positives)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def rate_at_threshold(scores: np.ndarray, threshold: float) -> float:
    """Fraction of `scores` at or above `threshold` (rejections at the deployed operating point)."""
    scores = np.asarray(scores)
    return float((scores >= threshold).mean()) if len(scores) else float("nan")


def finite_mean(values: list[float]) -> float:
    """Mean of the finite values (a setting without positives has a NaN AUROC); NaN when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
