"""Confidence intervals of the evaluation's mean AUROCs: a bootstrap over evaluation images.

One replicate redraws the clean evaluation images with replacement; every row of a drawn image (its
clean row and its perturbed versions) enters with the number of times the image was drawn. Resampling
images rather than rows keeps a clean image and its perturbed versions together, as they are correlated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REPLICATES = 500


def image_weights(images: np.ndarray, clean_images: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    """Bootstrap weights [replicates, rows]: how often each row's image was drawn, by image id.

    `clean_images` are the ids drawn from (the clean evaluation images); rows of other images weigh 0.
    """
    ids = np.unique(clean_images)
    counts = np.random.default_rng(seed).multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=replicates)
    column = np.searchsorted(ids, images)
    known = (column < len(ids)) & (ids[np.minimum(column, len(ids) - 1)] == images)
    weights = np.zeros((replicates, len(images)), np.float32)
    weights[:, known] = counts[:, column[known]]
    return weights


class WeightedAuroc:
    """AUROC of many positive sets against one weighted set of negatives, for every replicate at once."""

    def __init__(self, negatives: np.ndarray, weights: np.ndarray) -> None:
        order = np.argsort(negatives, kind="mergesort")
        self.sorted = np.asarray(negatives, np.float64)[order]
        running = np.cumsum(weights[:, order], axis=1, dtype=np.float64)
        self.cumulative = np.concatenate([np.zeros((len(weights), 1)), running], axis=1)  # [replicates, n + 1]

    def __call__(self, positives: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """[replicates]: P(positive > negative) + ½ P(tie) under the weights; NaN where either side weighs 0."""
        below = self.cumulative[:, np.searchsorted(self.sorted, positives, side="left")]
        up_to = self.cumulative[:, np.searchsorted(self.sorted, positives, side="right")]
        wins = (weights * (below + 0.5 * (up_to - below))).sum(axis=1)
        total = weights.sum(axis=1) * self.cumulative[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, wins / np.where(total > 0, total, 1.0), np.nan)


def mean_auroc_intervals(
    scores: np.ndarray,
    negatives: np.ndarray,
    groups: dict[str, Sequence[np.ndarray]],
    weights: np.ndarray,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """Per group, the `level` percentile interval [low, high] of the mean AUROC over its positive row masks.

    `negatives` masks the clean rows; `weights` comes from image_weights. A group without settings gets NaNs.
    """
    auroc = WeightedAuroc(scores[negatives], weights[:, negatives])
    tail = 100.0 * (1.0 - level) / 2.0
    out: dict[str, list[float]] = {}
    for group, masks in groups.items():
        means = np.full(len(weights), np.nan)
        if masks:
            per_setting = np.stack([auroc(scores[mask], weights[:, mask]) for mask in masks])
            finite = np.isfinite(per_setting)  # a replicate may draw no positive of a setting: it is left out
            counts = finite.sum(axis=0)
            means = np.where(counts > 0, np.where(finite, per_setting, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
        means = means[np.isfinite(means)]
        out[group] = ([float(np.percentile(means, tail)), float(np.percentile(means, 100.0 - tail))]
                      if len(means) else [float("nan"), float("nan")])
    return out
