"""BRISQUE natural-scene statistics, vectorised over a batch of grey images.

Mittal, Moorthy & Bovik (2012): MSCN coefficients of the grey image, a GGD fit of the MSCN
coefficients and AGGD fits of their four pairwise products (horizontal, vertical, main and
secondary diagonal), at the original scale and at half scale: 2 x (2 + 4 x 4) = 36 features.

Conventions (chosen to match the original algorithm and the ``brisque`` reference package):
grey values in [0, 1]; a normalised 7x7 Gaussian window (sigma 7/6) applied with zero padding
("same" size, as MATLAB's ``filter2``); stabiliser C = 1/255 (C = 1 on the 0..255 scale);
pairwise products over the overlapping region only (no wrap-around); half scale by bicubic
interpolation (a = -0.75, borders replicated, output size rounded half to even), as OpenCV's
``resize(fx=0.5, fy=0.5, INTER_CUBIC)`` does. The MSCN coefficients get the paper's zero-mean GGD
fit (the ``brisque`` package fits an AGGD there too, which moves its scores by ~1 point on average).
Shape parameters come from a lookup table of the GGD moment ratio, inverted by interpolation.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

MSCN_C = 1.0 / 255.0
WINDOW_SIZE = 7
WINDOW_SIGMA = 7.0 / 6.0
# Shape parameters the fits can return: the range of the original MATLAB search grid.
ALPHA_MIN, ALPHA_MAX = 0.2, 10.0
# Below these sides a banded matrix product blurs faster than shifted slices (measured on one core:
# 3-5x at 28 px; slower from ~96 px down the columns and ~128 px along the rows).
_MATMUL_MAX_ROWS = 64
_MATMUL_MAX_COLS = 112

FEATURE_NAMES: tuple[str, ...] = tuple(
    f"{scale}_{name}"
    for scale in ("s1", "s2")
    for name in (
        "mscn_alpha",
        "mscn_var",
        *(f"{pair}_{p}" for pair in ("h", "v", "d1", "d2") for p in ("alpha", "mean", "lvar", "rvar")),
    )
)


def _gaussian_taps() -> np.ndarray:
    offsets = np.arange(WINDOW_SIZE) - WINDOW_SIZE // 2
    taps = np.exp(-(offsets**2) / (2.0 * WINDOW_SIGMA**2))
    return (taps / taps.sum()).astype(np.float32)  # outer(taps, taps) is the normalised 2-D window


_TAPS = _gaussian_taps()
_HALF = WINDOW_SIZE // 2


@cache
def _band_matrix(n: int) -> np.ndarray:
    """[n, n] matrix M with M @ v = zero-padded 'same' correlation of v with the Gaussian taps."""
    m = np.zeros((n, n), np.float32)
    rows = np.arange(n)
    for k, tap in enumerate(_TAPS):
        cols = rows + k - _HALF
        ok = (cols >= 0) & (cols < n)
        m[rows[ok], cols[ok]] = tap
    m.flags.writeable = False  # cached and shared
    return m


def _blur_axis(x: np.ndarray, axis: int) -> np.ndarray:
    """Zero-padded 'same' Gaussian filtering of ``x`` [B, H, W] along axis 1 or 2."""
    _, h, w = x.shape
    # Matrix products are broadcast over the batch: numpy calls BLAS once per image with the same
    # shapes, so an image's result does not depend on the batch it is in (one GEMM over the whole
    # batch would pick kernels by batch size and row position).
    if axis == 1 and h <= _MATMUL_MAX_ROWS:
        return np.matmul(_band_matrix(h), x)
    if axis == 2 and w <= _MATMUL_MAX_COLS:
        return np.matmul(x, _band_matrix(w).T)
    n = x.shape[axis]
    pad_shape = list(x.shape)
    pad_shape[axis] += 2 * _HALF
    padded = np.zeros(pad_shape, np.float32)
    index = [slice(None)] * 3

    def window(start: int) -> np.ndarray:
        index[axis] = slice(start, start + n)
        return padded[tuple(index)]

    window(_HALF)[...] = x
    out = window(_HALF) * _TAPS[_HALF]
    tmp = np.empty_like(out)
    for d in range(1, _HALF + 1):  # symmetric taps: add the mirrored pair first, multiply once
        np.add(window(_HALF - d), window(_HALF + d), out=tmp)
        tmp *= _TAPS[_HALF - d]
        out += tmp
    return out


def gaussian_blur(x: np.ndarray) -> np.ndarray:
    """Local weighted mean of ``x`` [B, H, W]: the 7x7 BRISQUE window, zero padding, same size."""
    return _blur_axis(_blur_axis(x, 1), 2)


def mscn(grey: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of grey images [B, H, W] in [0, 1]."""
    grey = np.asarray(grey, np.float32)
    b = grey.shape[0]
    stacked = np.empty((2 * b, *grey.shape[1:]), np.float32)
    stacked[:b] = grey
    np.multiply(grey, grey, out=stacked[b:])
    moments = gaussian_blur(stacked)  # local E[x] and E[x^2] in one pass over both
    mu, sigma = moments[:b], moments[b:]
    sigma -= mu * mu  # variance; float rounding can make it slightly negative
    np.maximum(sigma, 0.0, out=sigma)
    np.sqrt(sigma, out=sigma)
    sigma += MSCN_C
    out = grey - mu
    out /= sigma
    return out


def _moment_ratio_table() -> tuple[np.ndarray, np.ndarray]:
    """alpha grid and rho(alpha) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)), increasing in alpha."""
    alpha = np.linspace(ALPHA_MIN, ALPHA_MAX, 9801)  # the MATLAB grid's 0.001 step
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    rho = np.exp(2.0 * lg(2.0 / alpha) - lg(1.0 / alpha) - lg(3.0 / alpha))
    return alpha, rho


_ALPHA_GRID, _RHO_GRID = _moment_ratio_table()


def shape_from_moment_ratio(ratio: np.ndarray) -> np.ndarray:
    """Invert rho(alpha) = E[|x|]^2 / E[x^2] of a GGD, clamped to [ALPHA_MIN, ALPHA_MAX]."""
    return np.interp(ratio, _RHO_GRID, _ALPHA_GRID)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (empty sets and all-zero coefficients)."""
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row dot products of a, b [B, n]: one BLAS dot per row (batch-invariant, faster than einsum)."""
    return np.matmul(a[:, None, :], b[:, :, None])[:, 0, 0]


def _moments(x: np.ndarray) -> np.ndarray:
    """Per-image sums of x [B, ...]: float64 [B, 4] = (sum |x|, sum x^2, sum_{x<0} x^2, count x<0)."""
    flat = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    out = np.zeros((flat.shape[0], 4))
    if flat.shape[1] == 0:
        return out
    a = np.abs(flat)
    out[:, 0] = np.matmul(a[:, None, :], np.ones((flat.shape[1], 1), np.float32))[:, 0, 0]  # per-row BLAS dot
    out[:, 1] = _row_dot(a, a)
    signed = _row_dot(flat, a)  # sum over x >= 0 minus sum over x < 0 of x^2
    out[:, 2] = np.clip(0.5 * (out[:, 1] - signed), 0.0, out[:, 1])
    out[:, 3] = np.less(flat, 0).view(np.int8).sum(axis=1, dtype=np.int32)
    return out


def _ggd_params(n: np.ndarray, moments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, variance) of zero-mean GGD fits from ``_moments`` of sets of ``n`` values."""
    s_abs, s_sq = moments[..., 0], moments[..., 1]
    variance = _safe_div(s_sq, n)
    return shape_from_moment_ratio(_safe_div(s_abs * s_abs, n * s_sq)), variance  # (E|x|)^2 / E[x^2]


def _aggd_params(n: np.ndarray, moments: np.ndarray) -> tuple[np.ndarray, ...]:
    """(alpha, mean, left variance, right variance) of AGGD fits from ``_moments`` of ``n`` values."""
    s_abs, s_sq, s_sq_neg, n_neg = np.moveaxis(moments, -1, 0)
    left_var = _safe_div(s_sq_neg, n_neg)
    right_var = _safe_div(s_sq - s_sq_neg, n - n_neg)
    sl, sr = np.sqrt(left_var), np.sqrt(right_var)
    # r_hat * (g^3 + 1)(g + 1) / (g^2 + 1)^2 with g = sl / sr, written to stay finite when sr = 0;
    # it is 1 for symmetric data (and for no data).
    correction = _safe_div((sl**3 + sr**3) * (sl + sr), (left_var + right_var) ** 2)
    correction[(left_var + right_var) == 0] = 1.0
    alpha = shape_from_moment_ratio(_safe_div(s_abs * s_abs, n * s_sq) * correction)
    # mean = (beta_r - beta_l) Gamma(2/a) / Gamma(1/a) with beta = sigma sqrt(Gamma(1/a) / Gamma(3/a)),
    # which simplifies to (sigma_r - sigma_l) sqrt(rho(alpha)).
    mean = (sr - sl) * np.sqrt(np.interp(alpha, _ALPHA_GRID, _RHO_GRID))
    return alpha, mean, left_var, right_var


def ggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean generalised Gaussian fit per image of ``x`` [B, ...]: (shape alpha, variance)."""
    x = np.asarray(x, np.float32)
    return _ggd_params(np.float64(math.prod(x.shape[1:])), _moments(x))


def aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric GGD fit per image of ``x`` [B, ...]: (alpha, mean, left variance, right variance).

    Moment matching (Lasmar, Stitou & Berthoumieu 2009) with left values x < 0 and right x >= 0.
    """
    x = np.asarray(x, np.float32)
    return _aggd_params(np.float64(math.prod(x.shape[1:])), _moments(x))


def _pair_products(m: np.ndarray) -> tuple[np.ndarray, ...]:
    """Horizontal, vertical, main-diagonal and secondary-diagonal neighbour products of m [B, H, W]."""
    return (
        m[:, :, :-1] * m[:, :, 1:],
        m[:, :-1, :] * m[:, 1:, :],
        m[:, :-1, :-1] * m[:, 1:, 1:],
        m[:, 1:, :-1] * m[:, :-1, 1:],
    )


def _scale_moments(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Set sizes [5] and ``_moments`` [B, 5, 4] of the MSCN coefficients and their 4 products."""
    m = mscn(grey)
    sets = (m, *_pair_products(m))
    sizes = np.array([s.shape[1] * s.shape[2] for s in sets], np.float64)
    return sizes, np.stack([_moments(s) for s in sets], axis=1)


# OpenCV's bicubic weights (a = -0.75) at the half-pixel offset a 2x downscale samples.
_CUBIC_HALF = np.array([-3.0, 19.0, 19.0, -3.0], np.float32) / 32.0


def _half_taps(n: int) -> tuple[int, np.ndarray]:
    """Output length and clamped source indices [m, 4] of a 2x bicubic downscale of ``n`` samples."""
    m = max(1, round(n / 2))  # Python's round is half-to-even, like OpenCV's cvRound
    # Output i interpolates at source 2i + 0.5 from samples 2i-1 .. 2i+2, indices clamped (replicate).
    return m, np.clip(2 * np.arange(m)[:, None] + np.arange(-1, 3)[None, :], 0, n - 1)


@cache
def _half_matrix(n: int) -> np.ndarray:
    """[m, n] matrix D with D @ v = the 2x bicubic downscale of v."""
    m, idx = _half_taps(n)
    d = np.zeros((m, n), np.float32)
    np.add.at(d, (np.repeat(np.arange(m), 4), idx.ravel()), np.tile(_CUBIC_HALF, m))
    d.flags.writeable = False  # cached and shared
    return d


def _half_axis(x: np.ndarray, axis: int) -> np.ndarray:
    _, h, w = x.shape
    if axis == 1 and h <= _MATMUL_MAX_ROWS:  # per-image products, as in _blur_axis
        return np.matmul(_half_matrix(h), x)
    if axis == 2 and w <= _MATMUL_MAX_COLS:
        return np.matmul(x, _half_matrix(w).T)
    n = x.shape[axis]
    m = _half_taps(n)[0]
    # padded[k] = x[k - 1] with clamped indices; output i's four taps are padded[2i .. 2i + 3].
    padded = np.take(x, np.clip(np.arange(-1, 2 * m + 1), 0, n - 1), axis=axis)
    index = [slice(None)] * 3

    def taps(start: int) -> np.ndarray:
        index[axis] = slice(start, start + 2 * m, 2)
        return padded[tuple(index)]

    out = taps(0) + taps(3)
    out *= _CUBIC_HALF[0]
    inner = taps(1) + taps(2)
    inner *= _CUBIC_HALF[1]
    out += inner
    return out


def half_scale(grey: np.ndarray) -> np.ndarray:
    """Bicubic 2x downscale of grey images [B, H, W] (OpenCV INTER_CUBIC semantics; >= 1 pixel)."""
    return _half_axis(_half_axis(np.asarray(grey, np.float32), 1), 2)


def brisque_features(grey: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of grey images [B, H, W] in [0, 1] -> float64 [B, 36].

    Per scale (full, then half): MSCN GGD (alpha, variance), then for the horizontal, vertical,
    main- and secondary-diagonal products AGGD (alpha, mean, left variance, right variance).
    """
    grey = np.asarray(grey, np.float32)
    n1, m1 = _scale_moments(grey)
    n2, m2 = _scale_moments(half_scale(grey))
    n, moments = np.concatenate([n1, n2]), np.concatenate([m1, m2], axis=1)  # [10], [B, 10, 4]
    ggd = np.stack(_ggd_params(n[[0, 5]], moments[:, [0, 5]]), axis=-1)  # [B, 2 scales, 2]
    products = [1, 2, 3, 4, 6, 7, 8, 9]
    aggd = np.stack(_aggd_params(n[products], moments[:, products]), axis=-1)  # [B, 8, 4]
    aggd = aggd.reshape(len(grey), 2, 16)
    return np.concatenate([ggd, aggd], axis=2).reshape(len(grey), 36)
