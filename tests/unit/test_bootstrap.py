"""Bootstrap intervals of mean AUROCs: the weighted AUROC is the AUROC, and intervals mean what they say."""

import numpy as np
import pytest

from iqaguard.training.bootstrap import WeightedAuroc, image_weights, mean_auroc_intervals
from iqaguard.training.metrics import auroc


def test_unit_weights_give_the_plain_auroc_ties_included() -> None:
    rng = np.random.default_rng(0)
    negatives = np.round(rng.normal(0.0, 1.0, 300), 1)  # rounded: many ties, between and within the sides
    positives = np.round(rng.normal(0.8, 1.0, 120), 1)
    weighted = WeightedAuroc(negatives, np.ones((1, len(negatives))))(positives, np.ones((1, len(positives))))
    assert weighted[0] == pytest.approx(auroc(negatives, positives), abs=1e-12)


def test_integer_weights_equal_repeating_the_rows() -> None:
    rng = np.random.default_rng(1)
    negatives, positives = rng.normal(0.0, 1.0, 50), rng.normal(1.0, 1.0, 20)
    neg_counts, pos_counts = rng.integers(0, 4, 50), rng.integers(0, 4, 20)
    weighted = WeightedAuroc(negatives, neg_counts[None].astype(float))(positives, pos_counts[None].astype(float))
    repeated = auroc(np.repeat(negatives, neg_counts), np.repeat(positives, pos_counts))
    assert weighted[0] == pytest.approx(repeated, abs=1e-12)


def test_weights_follow_images_and_ignore_unknown_ones() -> None:
    clean = np.array([10, 11, 12, 13])
    rows = np.array([10, 11, 12, 13, 12, 12, 99])  # clean rows, two perturbed rows of image 12, a stray row
    weights = image_weights(rows, clean, replicates=200, seed=3)
    assert weights.shape == (200, 7)
    assert np.all(weights[:, :4].sum(axis=1) == 4)  # each replicate draws as many images as there are
    assert np.all(weights[:, 4] == weights[:, 2]) and np.all(weights[:, 5] == weights[:, 2])
    assert np.all(weights[:, 6] == 0)


def test_intervals_cover_the_population_and_narrow_with_more_images() -> None:
    widths = []
    for images in (200, 3200):
        rng = np.random.default_rng(images)
        ids = np.arange(images)
        clean_scores = rng.normal(0.0, 1.0, images)
        attacked = rng.normal(1.0, 1.0, images)  # population AUROC Φ(1/√2) ≈ 0.760
        scores = np.concatenate([clean_scores, attacked])
        image = np.concatenate([ids, ids])
        clean = np.arange(2 * images) < images
        weights = image_weights(image, ids, replicates=400, seed=0)
        interval = mean_auroc_intervals(scores, clean, {"attacks": [~clean], "none": []}, weights)
        low, high = interval["attacks"]
        assert low < 0.7602 < high
        assert low <= auroc(clean_scores, attacked) <= high
        assert np.isnan(interval["none"]).all()
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # 16× the images: a quarter of the width, in theory
