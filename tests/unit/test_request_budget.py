"""The per-request budget of iqa_preprocess: items, bytes and claimed pixels, refused before decoding."""

from __future__ import annotations

import numpy as np
import pytest
from support.images import encode, png_header_claiming

from iqaguard.imaging import InvalidImageError
from iqaguard.in_triton import preprocess
from iqaguard.in_triton.preprocess import Preprocessor, RequestBudget, header_pixels


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the request is over its budget")

    monkeypatch.setattr(preprocess, "bytes_to_pixels", refuse)


def test_header_pixels_reads_the_header_only() -> None:
    assert header_pixels(png_header_claiming(6000, 6000)) == 36_000_000
    assert header_pixels(b"junk") == 0


@pytest.mark.parametrize(
    ("items", "rule"),
    [
        ([png_header_claiming(8, 8)] * 17, "IMAGE holds 17 items; max_request_items is 16"),
        ([png_header_claiming(6000, 6000)] * 2, "max_request_pixels is 48000000"),
        ([b"\x89PNG\r\n\x1a\n" + bytes(40 * 2**20)] * 2, "max_request_bytes is 67108864"),
    ],
)
def test_request_over_budget_is_refused_before_decoding(no_decoding: None, items: list[bytes], rule: str) -> None:
    (result,) = Preprocessor((32, 32), budget=RequestBudget()).run([items])
    assert isinstance(result, InvalidImageError) and rule in str(result)


def test_request_within_budget_is_served(photo: np.ndarray) -> None:
    good = encode(photo, "PNG")
    budget = RequestBudget(max_items=2, max_pixels=2 * photo.shape[0] * photo.shape[1])
    ok, over = Preprocessor((32, 32), budget=budget).run([[good, good], [good, good, good]])
    assert not isinstance(ok, Exception) and ok.pixels.shape == (2, 3, 32, 32)
    assert isinstance(over, InvalidImageError) and "max_request_items is 2" in str(over)
