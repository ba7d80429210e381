"""Decoding and validation of encoded images, without a server."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.images import bad_images, encode, good_images, png_header_claiming

from iqaguard.imaging import InvalidImageError, bytes_to_pixels, decode_image, to_pixels
from iqaguard.in_triton.preprocess import Preprocessor
from iqaguard.repository.layout import MissingArtifactError, read_input_size


def test_every_good_format_decodes_to_rgb8(photo: np.ndarray) -> None:
    for name, data in good_images(photo).items():
        image = decode_image(data)
        assert image.mode == "RGB", name
        pixels = to_pixels(image, (32, 24))
        assert pixels.shape == (3, 32, 24) and pixels.dtype == np.float32, name
        assert pixels.min() >= 0.0 and pixels.max() <= 1.0, name


@pytest.mark.parametrize("name", list(bad_images(np.zeros((8, 8, 3), np.uint8))))
def test_bad_inputs_raise_invalid_image(photo: np.ndarray, name: str) -> None:
    with pytest.raises(InvalidImageError, match=r"^invalid image: "):
        decode_image(bad_images(photo)[name])


def test_exif_orientation_is_applied(photo: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode_image(encode(photo, "JPEG", exif=exif.tobytes()))
    assert image.size == (photo.shape[0], photo.shape[1])  # width and height swapped


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((250, 0, 0), (0, 250, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    red, green, _ = np.asarray(decode_image(data)).mean(axis=(0, 1))
    assert red > 200 and green < 50


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    grey = np.asarray(decode_image(encode(Image.fromarray(ramp), "PNG")))[..., 0]
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) > 200


def test_transparency_is_composited_over_white() -> None:
    transparent = np.zeros((8, 8, 4), np.uint8)
    assert np.asarray(decode_image(encode(transparent, "PNG"))).min() == 255


def test_pixel_limit_is_checked_before_decoding() -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidImageError, match="exceeds the limit of 1000000 pixels"):
        decode_image(png_header_claiming(20000, 20000), max_pixels=1_000_000)
    assert time.perf_counter() - started < 1.0  # 400 Mpx were never allocated


def test_byte_limit(photo: np.ndarray) -> None:
    with pytest.raises(InvalidImageError, match="exceeds the limit of 100 bytes"):
        bytes_to_pixels(encode(photo, "PNG"), (8, 8), max_bytes=100)


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="expected encoded bytes"):
        decode_image("not bytes")  # type: ignore[arg-type]


def test_preprocessor_isolates_bad_requests(photo: np.ndarray) -> None:
    good = encode(photo, "PNG")
    results = Preprocessor((32, 32)).run([[good], [b"junk"], [good, good], []])
    assert results[0].pixels.shape == (1, 3, 32, 32) and results[0].iqa.shape == (1, 37)
    assert isinstance(results[1], InvalidImageError)
    assert results[2].quality.shape == (2, 1) and np.isfinite(results[2].iqa).all()
    np.testing.assert_array_equal(results[2].iqa[0], results[0].iqa[0])  # batching changes nothing
    assert isinstance(results[3], InvalidImageError) and "no image" in str(results[3])


def test_missing_preprocess_json_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingArtifactError, match="make build"):
        read_input_size(tmp_path)
