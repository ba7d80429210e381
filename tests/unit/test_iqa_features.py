"""BRISQUE building blocks against their definitions: filtering, MSCN, downscaling, GGD/AGGD fits."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.signal import convolve2d

from iqaguard.iqa import aggd_fit, brisque_features, ggd_fit, mscn
from iqaguard.iqa.features import (
    ALPHA_MAX,
    ALPHA_MIN,
    FEATURE_NAMES,
    MSCN_C,
    gaussian_blur,
    half_scale,
    shape_from_moment_ratio,
)


def window_1d() -> np.ndarray:
    """The BRISQUE window's 1-D factor from its definition: 7 taps, sigma 7/6, normalised."""
    taps = np.exp(-((np.arange(7) - 3.0) ** 2) / (2 * (7 / 6) ** 2))
    return taps / taps.sum()


def mscn_definition(grey: np.ndarray) -> np.ndarray:
    """MSCN in float64 straight from the paper's formula, 2-D window, zero padding ('same')."""
    window = np.outer(window_1d(), window_1d())
    mu = convolve2d(grey, window, mode="same")
    sigma = np.sqrt(np.abs(convolve2d(grey * grey, window, mode="same") - mu * mu))
    return (grey - mu) / (sigma + 1 / 255)


# Sides on both sides of the switch between matrix-product and shifted-slice filtering.
SIZES = [(1, 1), (5, 9), (28, 28), (64, 65), (65, 112), (113, 130), (224, 224)]


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_blur_is_the_zero_padded_gaussian_window(h: int, w: int) -> None:
    x = np.random.default_rng(h * 1000 + w).random((2, h, w))
    window = np.outer(window_1d(), window_1d())
    expected = np.stack([convolve2d(img, window, mode="same") for img in x])
    np.testing.assert_allclose(gaussian_blur(x.astype(np.float32)), expected, atol=2e-6)


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_mscn_matches_its_definition(h: int, w: int) -> None:
    grey = np.random.default_rng(7).random((h, w))
    np.testing.assert_allclose(mscn(grey[None].astype(np.float32))[0], mscn_definition(grey), atol=2e-4)


def test_mscn_of_a_constant_image_is_zero_inside_and_known_at_the_corner() -> None:
    c = 0.6
    m = mscn(np.full((1, 20, 20), c, np.float32))[0]
    np.testing.assert_allclose(m[3:-3, 3:-3], 0.0, atol=1e-4)  # the window sees only c
    # At a corner the zero padding leaves weight s = (sum of the centre and 3 taps on one side)^2.
    s = window_1d()[3:].sum() ** 2
    corner = (c - c * s) / (c * math.sqrt(s * (1 - s)) + MSCN_C)
    assert m[0, 0] == pytest.approx(corner, rel=1e-4)
    np.testing.assert_allclose(m, m[::-1, ::-1], atol=1e-5)  # symmetric image, symmetric MSCN


def test_mscn_of_black_is_exactly_zero() -> None:
    assert not mscn(np.zeros((1, 9, 9), np.float32)).any()


@pytest.mark.parametrize(("h", "w"), [(2, 2), (3, 7), (28, 28), (63, 65), (112, 224), (225, 300), (5, 200)])
def test_half_scale_is_opencv_bicubic(h: int, w: int) -> None:
    x = np.random.default_rng(h + w).random((h, w)).astype(np.float32)
    expected = cv2.resize(x, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(half_scale(x[None])[0], expected, atol=1e-6)


def test_half_scale_keeps_at_least_one_pixel() -> None:
    assert half_scale(np.ones((3, 1, 1), np.float32)).shape == (3, 1, 1)
    assert half_scale(np.ones((1, 1, 9), np.float32)).shape == (1, 1, 4)


def gamma_ratio(alpha: float) -> float:
    return math.gamma(2 / alpha) ** 2 / (math.gamma(1 / alpha) * math.gamma(3 / alpha))


def test_shape_lookup_inverts_the_moment_ratio_and_clamps() -> None:
    alphas = np.array([0.25, 0.5, 1.0, 1.7, 2.0, 3.3, 8.0])
    ratios = np.array([gamma_ratio(a) for a in alphas])
    np.testing.assert_allclose(shape_from_moment_ratio(ratios), alphas, rtol=1e-4)
    assert shape_from_moment_ratio(np.array([0.0]))[0] == ALPHA_MIN
    assert shape_from_moment_ratio(np.array([0.99]))[0] == ALPHA_MAX


def sample_aggd(alpha: float, sigma_l: float, sigma_r: float, n: int, seed: int) -> np.ndarray:
    """Draw from an AGGD: |x| / beta ~ Gamma(1/alpha)^(1/alpha), side chosen with odds beta_l : beta_r."""
    rng = np.random.default_rng(seed)
    scale = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    beta_l, beta_r = sigma_l * scale, sigma_r * scale
    magnitude = rng.gamma(1 / alpha, 1.0, n) ** (1 / alpha)
    left = rng.random(n) < beta_l / (beta_l + beta_r)
    return np.where(left, -beta_l * magnitude, beta_r * magnitude)


@pytest.mark.parametrize(("alpha", "sigma"), [(0.6, 0.3), (1.0, 1.0), (2.0, 0.5), (3.5, 2.0)])
def test_ggd_fit_recovers_shape_and_variance(alpha: float, sigma: float) -> None:
    x = sample_aggd(alpha, sigma, sigma, 400_000, seed=int(alpha * 10))
    fitted_alpha, variance = ggd_fit(x[None].astype(np.float32))
    assert fitted_alpha[0] == pytest.approx(alpha, rel=0.04)
    assert variance[0] == pytest.approx(sigma**2, rel=0.02)


@pytest.mark.parametrize(
    ("alpha", "sigma_l", "sigma_r"), [(0.8, 0.2, 0.1), (1.5, 1.0, 1.0), (2.0, 0.3, 0.6), (3.0, 1.2, 0.7)]
)
def test_aggd_fit_recovers_shape_sides_and_mean(alpha: float, sigma_l: float, sigma_r: float) -> None:
    x = sample_aggd(alpha, sigma_l, sigma_r, 400_000, seed=int(alpha * 100))
    fitted_alpha, mean, left_var, right_var = aggd_fit(x[None].astype(np.float32))
    assert fitted_alpha[0] == pytest.approx(alpha, rel=0.05)
    assert left_var[0] == pytest.approx(sigma_l**2, rel=0.02)
    assert right_var[0] == pytest.approx(sigma_r**2, rel=0.02)
    assert mean[0] == pytest.approx(x.mean(), abs=0.01 * (sigma_l + sigma_r))


def test_fits_of_empty_and_all_zero_sets_are_finite() -> None:
    for x in (np.zeros((2, 0), np.float32), np.zeros((2, 50), np.float32)):
        for value in (*ggd_fit(x), *aggd_fit(x)):
            assert np.isfinite(value).all()
    alpha, mean, left_var, right_var = aggd_fit(np.zeros((1, 50), np.float32))
    assert (alpha[0], mean[0], left_var[0], right_var[0]) == (ALPHA_MIN, 0.0, 0.0, 0.0)


def test_one_sided_data_gets_a_finite_aggd() -> None:
    x = np.abs(sample_aggd(1.0, 1.0, 1.0, 10_000, seed=3))[None].astype(np.float32)
    alpha, mean, left_var, right_var = aggd_fit(x)
    assert left_var[0] == 0.0 and right_var[0] > 0 and mean[0] > 0
    assert ALPHA_MIN <= alpha[0] <= ALPHA_MAX


def test_feature_names_follow_the_paper_order() -> None:
    assert len(FEATURE_NAMES) == 36 == len(set(FEATURE_NAMES))
    assert FEATURE_NAMES[:3] == ("s1_mscn_alpha", "s1_mscn_var", "s1_h_alpha")
    assert FEATURE_NAMES[18] == "s2_mscn_alpha" and FEATURE_NAMES[-1] == "s2_d2_rvar"


def test_empty_batches_have_the_right_shapes() -> None:
    assert brisque_features(np.zeros((0, 5, 5), np.float32)).shape == (0, 36)
    assert brisque_features(np.zeros((0, 300, 300), np.float32)).shape == (0, 36)
    assert all(v.shape == (0,) for v in aggd_fit(np.zeros((0, 4), np.float32)))
