"""The public entry point: shapes, dtypes, inputs (numpy/torch, 8/16-bit, grey), edge cases, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, transform

import iqaguard.iqa.quality as quality
from iqaguard.iqa import N_OUTPUTS, brisque, brisque_score, to_grey


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Three real photos as the teacher sees them: float32 [3, 3, 64, 80] RGB in [0, 1]."""
    images = [data.chelsea(), data.coffee(), data.astronaut()]
    batch = [transform.resize(img, (64, 80), anti_aliasing=True) for img in images]
    return np.stack(batch).transpose(0, 3, 1, 2).astype(np.float32)


def test_batch_shape_dtype_and_finite(photos: np.ndarray) -> None:
    out = brisque(photos)
    assert out.shape == (3, N_OUTPUTS) == (3, 37) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(brisque_score(photos), out[:, -1])


def test_empty_batch() -> None:
    out = brisque(np.zeros((0, 3, 32, 32), np.float32))
    assert out.shape == (0, 37) and out.dtype == np.float32


def test_deterministic_and_batch_independent(photos: np.ndarray) -> None:
    first = brisque(photos)
    np.testing.assert_array_equal(first, brisque(photos.copy()))
    one_by_one = np.concatenate([brisque(photos[i : i + 1]) for i in range(len(photos))])
    np.testing.assert_array_equal(one_by_one, first)  # batch invariance is exact by construction


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (64, 80), (7, 5), (130, 120)])
def test_an_image_scores_the_same_in_any_batch_at_any_position(size: tuple[int, int]) -> None:
    """Bit for bit: alone, at every position of shuffled batches of every size, and at odd memory offsets."""
    rng = np.random.default_rng(3)
    images = rng.random((12, 3, *size), dtype=np.float32)
    images[5] = images[4]  # two identical images in one batch must get identical rows
    alone = np.concatenate([brisque(images[i : i + 1]) for i in range(len(images))])
    for batch_size in (2, 3, 5, 12):
        order = rng.permutation(len(images))[:batch_size]
        np.testing.assert_array_equal(brisque(images[order]), alone[order])
    np.testing.assert_array_equal(brisque(images)[5], brisque(images)[4])
    for offset in (1, 3, 7):  # rows that start off any SIMD alignment
        buffer = np.empty(images.size + 16, np.float32)[offset : offset + images.size].reshape(images.shape)
        buffer[...] = images
        np.testing.assert_array_equal(brisque(buffer), alone)


def test_chunked_batches_equal_whole_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).random((10, 3, 28, 28), dtype=np.float32)
    whole = brisque(x)
    monkeypatch.setattr(quality, "_CHUNK_PIXELS", 3 * 28 * 28)  # chunks of 3 images
    np.testing.assert_array_equal(brisque(x), whole)


def test_torch_input_equals_numpy(photos: np.ndarray) -> None:
    expected = brisque(photos)
    tensor = torch.from_numpy(photos.copy()).requires_grad_(True)
    got = brisque(tensor)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    half = brisque(torch.from_numpy(photos).to(torch.bfloat16))
    assert np.isfinite(half).all() and half.shape == (3, 37)


def test_float64_input_equals_float32(photos: np.ndarray) -> None:
    np.testing.assert_array_equal(brisque(photos.astype(np.float64)), brisque(photos))


def test_sixteen_and_eight_bit_inputs() -> None:
    rgb16 = (data.astronaut()[::4, ::4].astype(np.uint16) * 257).transpose(2, 0, 1)[None]  # 8-bit range
    from_uint16 = brisque(rgb16)
    np.testing.assert_allclose(from_uint16, brisque(rgb16.astype(np.float32) / 65535), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(from_uint16, brisque((rgb16 // 257).astype(np.uint8)), rtol=1e-4, atol=1e-3)
    # Genuinely 16-bit detail (finer than 8-bit steps) is scored, finitely.
    rng = np.random.default_rng(1)
    fine = (rgb16.astype(np.int64) + rng.integers(0, 257, rgb16.shape)).clip(0, 65535).astype(np.uint16)
    assert np.isfinite(brisque(fine)).all()


def test_greyscale_derived_input() -> None:
    grey = data.camera()[::4, ::4]
    as_rgb = np.repeat(grey[None, None], 3, axis=1).astype(np.float32) / 255
    as_one_channel = grey[None, None].astype(np.float32) / 255
    # Luma of R=G=B is the grey value up to float32 rounding, which moves features by ~1e-5.
    np.testing.assert_allclose(brisque(as_rgb), brisque(as_one_channel), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(to_grey(as_rgb)[0], grey / 255, atol=1e-6)  # luma weights sum to 1


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("size", [(1, 1), (8, 8), (1, 9), (9, 1), (2, 2), (224, 224)])
def test_constant_and_tiny_images_are_finite(value: float, size: tuple[int, int]) -> None:
    out = brisque(np.full((2, 3, *size), value, np.float32))
    assert np.isfinite(out).all(), out
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (3, 200)])
def test_random_tiny_images_are_finite(size: tuple[int, int]) -> None:
    x = np.random.default_rng(5).random((4, 3, *size), dtype=np.float32)
    assert np.isfinite(brisque(x)).all()


def test_non_finite_and_out_of_range_pixels_give_finite_output(photos: np.ndarray) -> None:
    x = photos.copy()
    x[0, :, :5, :5] = np.nan
    x[1, 0, 10:20, 10:20] = np.inf
    x[2, 1, :, :3] = -np.inf
    x[2, 2, 30:, 30:] = 1e30
    out = brisque(x)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, brisque(x))
    # The documented rule: the grey image is clipped to [0, 1], NaN -> 0.
    stretched = photos * 3 - 1
    luma = np.einsum("c,nchw->nhw", np.array([0.2125, 0.7154, 0.0721]), stretched)
    np.testing.assert_allclose(to_grey(stretched), np.clip(luma, 0, 1), atol=1e-6)
    grey = to_grey(x)
    assert (grey[0, :5, :5] == 0).all() and (grey[1, 10:20, 10:20] == 1).all() and (grey[2, :, :3] == 0).all()


def test_impulse_and_extreme_patterns_are_finite() -> None:
    patterns = np.zeros((4, 3, 16, 16), np.float32)
    patterns[0, :, 8, 8] = 1.0  # one bright pixel on black
    patterns[1, :, ::2, ::2] = 1.0  # pixel grid
    patterns[2, :, :, 8:] = 1.0  # one edge
    patterns[3] = np.indices((16, 16)).sum(0) % 2  # checkerboard
    assert np.isfinite(brisque(patterns)).all()


def test_quality_ordering_on_a_real_photo(photos: np.ndarray) -> None:
    """Sanity of the score's direction: heavy noise on a photo scores worse than the photo."""
    noisy = np.clip(photos + np.random.default_rng(0).normal(0, 0.15, photos.shape), 0, 1).astype(np.float32)
    assert (brisque(noisy)[:, -1] > brisque(photos)[:, -1] + 10).all()


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 4, 32, 32), (2, 2, 32, 32), (1, 3, 0, 5), (2, 3, 32)])
def test_rejects_malformed_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        brisque(np.zeros(shape, np.float32))
