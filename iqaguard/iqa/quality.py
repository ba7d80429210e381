"""Public BRISQUE entry point: RGB pixel batches (numpy or torch) -> 36 features + score."""

from __future__ import annotations

from typing import Any

import numpy as np

from iqaguard.contract import IQA_DIM
from iqaguard.iqa.features import brisque_features
from iqaguard.iqa.svr import load_model

N_OUTPUTS = IQA_DIM  # 36 features, then the score
# skimage.color.rgb2gray's weights (ITU-R BT.709 luma), which the `brisque` reference applies.
LUMA_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], np.float32)
# Images are processed in chunks of about this many pixels: bounded memory, cache-sized arrays.
_CHUNK_PIXELS = 1 << 18


def _to_numpy(pixels: Any) -> np.ndarray:
    if hasattr(pixels, "detach"):  # torch.Tensor, without importing torch here
        tensor = pixels.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype.itemsize < 4:  # float16 / bfloat16
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(pixels)


def to_grey(pixels: Any) -> np.ndarray:
    """[N, 3, H, W] RGB (or [N, 1, H, W] grey) -> float32 grey [N, H, W] in [0, 1].

    Floats are taken as [0, 1]; integer dtypes are scaled by their maximum (uint8 / 255,
    uint16 / 65535). The grey result is clipped to [0, 1] with NaN -> 0, so any input gives
    finite statistics.
    """
    x = _to_numpy(pixels)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected pixels [N, 3, H, W] (or [N, 1, H, W]), got shape {x.shape}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"images must have at least one pixel, got shape {x.shape}")
    scale = 1.0
    if x.dtype == np.bool_:
        x = x.astype(np.float32)
    elif np.issubdtype(x.dtype, np.integer):
        scale = 1.0 / float(np.iinfo(x.dtype).max)
        x = x.astype(np.float32)
    elif x.dtype != np.float32:
        x = x.astype(np.float32)
    if x.shape[1] == 3:
        # Separate multiply and add ufuncs round every pixel alike wherever it sits in memory
        # (einsum's SIMD loops fuse multiply-add in the body but not in the tail: batch-dependent).
        weights = LUMA_WEIGHTS * np.float32(scale)
        grey = x[:, 0] * weights[0]
        grey += x[:, 1] * weights[1]
        grey += x[:, 2] * weights[2]
    else:
        grey = x[:, 0] * np.float32(scale)
    np.fmax(grey, 0.0, out=grey)  # fmax/fmin drop NaN for the bound: NaN -> 0, +inf -> 1
    return np.fmin(grey, 1.0, out=grey)


def brisque(pixels: Any) -> np.ndarray:
    """BRISQUE of a batch: ``pixels`` [N, 3, H, W] float32 RGB in [0, 1] (numpy or torch).

    Returns float32 [N, 37]: the 36 BRISQUE features (``features.FEATURE_NAMES``), then the
    score of the LIVE-trained SVR (about 0 for pristine photos, 100+ for very poor ones).
    Always finite and deterministic; see ``to_grey`` for the accepted dtypes.
    """
    grey = to_grey(pixels)
    n, h, w = grey.shape
    out = np.empty((n, N_OUTPUTS), np.float32)
    if n == 0:
        return out
    chunk = max(1, _CHUNK_PIXELS // (h * w))
    model = load_model()
    for start in range(0, n, chunk):
        feats = brisque_features(grey[start : start + chunk])
        out[start : start + chunk, :-1] = feats
        out[start : start + chunk, -1] = model.score(feats)
    return out


def brisque_score(pixels: Any) -> np.ndarray:
    """Just the BRISQUE scores, float32 [N] (a convenience over ``brisque``)."""
    return brisque(pixels)[:, -1]
