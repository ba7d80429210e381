"""Faithfulness: iqaguard's BRISQUE tracks the `brisque` reference package on real, distorted photos.

Photos from skimage.data, downscaled (Lanczos) to at most 256 px on the long side so the reference
(~20 ms per 224 px image, more for larger) stays fast: 9 photos x (clean + 4 distortions x 3
severities) = 117 images, scored once per module by both implementations.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr
from skimage import color, data, filters

from iqaguard.iqa import brisque, brisque_features, to_grey

with warnings.catch_warnings():  # the reference's own imports raise deprecation warnings
    warnings.simplefilter("ignore")
    from brisque import BRISQUE

# The reference's features are 1-element arrays that it converts to floats (numpy deprecates that).
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "moon", "clock", "immunohistochemistry"]
MAX_SIDE = 256


def load_photo(name: str) -> np.ndarray:
    """uint8 RGB photo, greyscale ones replicated to three channels, long side <= MAX_SIDE."""
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    pil = Image.fromarray(image[..., :3])
    scale = MAX_SIDE / max(pil.size)
    if scale < 1:
        pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.LANCZOS)
    return np.asarray(pil)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return to_uint8(filters.gaussian(image, sigma=sigma, channel_axis=-1))


def gaussian_noise(image: np.ndarray, sigma: float) -> np.ndarray:
    return to_uint8(image / 255 + np.random.default_rng(0).normal(0, sigma, image.shape))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def contrast_loss(image: np.ndarray, factor: float) -> np.ndarray:
    x = image / 255
    return to_uint8(x.mean() + factor * (x - x.mean()))


# Distortion -> (function, severities from mild to strong).
DISTORTIONS: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], tuple[float, ...]]] = {
    "blur": (gaussian_blur, (1.0, 2.0, 4.0)),
    "noise": (gaussian_noise, (0.02, 0.05, 0.1)),
    "jpeg": (jpeg, (50, 20, 5)),
    "contrast": (contrast_loss, (0.5, 0.25, 0.1)),
}


def ours(image: np.ndarray) -> float:
    return float(brisque((image.astype(np.float32) / 255).transpose(2, 0, 1)[None])[0, -1])


@pytest.fixture(scope="module")
def reference() -> BRISQUE:
    return BRISQUE(url=False)


@pytest.fixture(scope="module")
def scores(reference: BRISQUE) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(photo, distortion, level) -> (reference score, our score); level 0 is the clean photo."""
    table = {}
    for name in PHOTOS:
        photo = load_photo(name)
        table[name, "clean", 0] = (float(reference.score(photo)), ours(photo))
        for distortion, (apply, severities) in DISTORTIONS.items():
            for level, severity in enumerate(severities, start=1):
                image = apply(photo, severity)
                table[name, distortion, level] = (float(reference.score(image)), ours(image))
    return table


def test_scores_track_the_reference(scores: dict[tuple[str, str, int], tuple[float, float]]) -> None:
    ref, mine = np.array(list(scores.values())).T
    rho = spearmanr(ref, mine).statistic
    mad = np.abs(ref - mine).mean()
    print(f"\nparity over {len(ref)} images: Spearman {rho:.4f}, mean |diff| {mad:.2f}")
    assert rho >= 0.95
    assert mad <= 5.0


@pytest.mark.parametrize("distortion", list(DISTORTIONS))
def test_quality_worsens_with_severity(
    scores: dict[tuple[str, str, int], tuple[float, float]], distortion: str
) -> None:
    def mine(name: str, level: int) -> float:
        return scores[(name, distortion, level) if level else (name, "clean", 0)][1]

    levels = range(1, len(DISTORTIONS[distortion][1]) + 1)
    for name in PHOTOS:
        ladder = [mine(name, level) for level in levels]
        assert all(np.diff(ladder) > 0), f"{name} {distortion}: {np.round(ladder, 2)}"
    # Clean photos score best on average. (Per photo, the mildest noise or contrast loss can read as
    # slightly *better* than clean, in the reference too: BRISQUE rewards mild grain on smooth photos.)
    means = [np.mean([mine(name, level) for name in PHOTOS]) for level in (0, *levels)]
    assert all(np.diff(means) > 0), np.round(means, 2)


def test_features_match_the_reference(reference: BRISQUE) -> None:
    """The same conventions (grey, window, padding, downscale) give the same 36 features.

    Exception by design: the MSCN shape/variance are a GGD fit here, as in the paper (the reference
    fits an AGGD to MSCN too), so those four agree only closely.
    """
    import cv2

    photo = load_photo("rocket")
    grey = color.rgb2gray(photo)
    half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    expected = np.concatenate(
        [reference.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6) for g in (grey, half)]
    ).astype(np.float64)
    mine = brisque_features(to_grey(photo.transpose(2, 0, 1)[None]))[0]
    mscn_columns = [0, 1, 18, 19]
    others = np.setdiff1d(np.arange(36), mscn_columns)
    np.testing.assert_allclose(mine[others], expected[others], rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(mine[mscn_columns], expected[mscn_columns], rtol=0.05)


def test_grey_is_the_reference_conversion() -> None:
    photo = load_photo("coffee")
    np.testing.assert_allclose(to_grey(photo.transpose(2, 0, 1)[None])[0], color.rgb2gray(photo), atol=1e-6)
