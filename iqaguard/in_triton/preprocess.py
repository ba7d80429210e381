"""The iqa_preprocess model's work, free of Triton: bytes per request in, pixels + IQA out.

Each request's images are decoded on their own, so one bad image fails only its request; the
pixels of all good requests are scored by BRISQUE in one vectorised call. A request's total cost
(items, bytes, pixels its headers claim) is checked against its budget before anything is decoded;
large requests then go through iqaguard.in_triton.large_requests.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from iqaguard.imaging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, InvalidImageError, bytes_to_pixels, sniff_format
from iqaguard.in_triton.large_requests import LargeRequestGate, RequestRefused
from iqaguard.in_triton.query_memory import signature
from iqaguard.iqa import brisque


@dataclass(frozen=True)
class RequestBudget:
    """The most one request may cost, whatever its items: count, encoded bytes, decoded pixels."""

    max_items: int = 16
    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 48_000_000

    def check(self, images: Sequence[bytes]) -> int:
        """The pixels `images`' headers claim in total; InvalidImageError naming the tensor and the rule when
        `images` exceed the budget."""
        if len(images) > self.max_items:
            raise InvalidImageError(
                f"IMAGE holds {len(images)} items; max_request_items is {self.max_items}", "over_budget"
            )
        total_bytes = sum(len(data) for data in images)
        if total_bytes > self.max_bytes:
            raise InvalidImageError(
                f"IMAGE holds {total_bytes} bytes in {len(images)} items; max_request_bytes is {self.max_bytes}",
                "over_budget",
            )
        total_pixels = sum(header_pixels(data) for data in images)
        if total_pixels > self.max_pixels:
            raise InvalidImageError(
                f"IMAGE's {len(images)} items claim {total_pixels} pixels; max_request_pixels is {self.max_pixels}",
                "over_budget",
            )
        return total_pixels


def header_pixels(data: bytes) -> int:
    """Width × height as the image's header claims it (nothing decoded); 0 when there is no valid header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[sniff_format(data)]) as image:
                width, height = image.size
    except Exception:  # decode_image reports what is wrong with this item on its own
        return 0
    return width * height


@dataclass(frozen=True)
class PreprocessResult:
    """One request's outputs: pixels [B,3,H,W], IQA vector [B,37], BRISQUE score [B,1], and for the probe
    memory (iqaguard.in_triton.query_memory) a coarse signature [B,256]."""

    pixels: np.ndarray
    iqa: np.ndarray
    quality: np.ndarray
    signature: np.ndarray


class Preprocessor:
    """Turns batches of requests (each a list of encoded images) into teacher inputs and IQA."""

    def __init__(
        self,
        size: tuple[int, int],
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        budget: RequestBudget | None = None,
        large: LargeRequestGate | None = None,
    ) -> None:
        self.size = size
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.budget = budget  # None: no per-request budget (in-process use: the build, tests)
        self.large = large  # with a budget: large requests take a slot and decode at low priority

    def _decode_request(self, images: Sequence[bytes]) -> np.ndarray:
        if len(images) == 0:
            raise InvalidImageError("request holds no image", "empty")
        if self.budget is None:
            return self._decode_items(images)
        claimed = self.budget.check(images)
        if self.large is not None and self.large.is_large(claimed):
            return self.large.run_large(lambda: self._decode_items(images))
        return self._decode_items(images)

    def _decode_items(self, images: Sequence[bytes]) -> np.ndarray:
        pixels = []
        for index, data in enumerate(images):
            try:
                pixels.append(bytes_to_pixels(data, self.size, self.max_pixels, self.max_bytes))
            except InvalidImageError as error:
                if len(images) == 1:
                    raise
                message = str(error).removeprefix("invalid image: ")
                raise InvalidImageError(f"item {index}: {message}", error.kind) from None
        return np.stack(pixels)

    def run(self, requests: Sequence[Sequence[bytes]]) -> list[PreprocessResult | InvalidImageError | RequestRefused]:
        """Preprocess every request; a failed request yields its InvalidImageError (or, refused for now while
        the server is busy with large requests, its RequestRefused) in its slot."""
        decoded: list[np.ndarray | InvalidImageError | RequestRefused] = []
        for images in requests:
            try:
                decoded.append(self._decode_request(images))
            except (InvalidImageError, RequestRefused) as error:
                decoded.append(error)
        good = [item for item in decoded if isinstance(item, np.ndarray)]
        if not good:
            return list(decoded)  # type: ignore[arg-type]
        iqa_all = brisque(np.concatenate(good))
        results: list[PreprocessResult | InvalidImageError | RequestRefused] = []
        offset = 0
        for item in decoded:
            if not isinstance(item, np.ndarray):
                results.append(item)
                continue
            iqa = iqa_all[offset : offset + len(item)]
            offset += len(item)
            results.append(PreprocessResult(pixels=item, iqa=iqa, quality=iqa[:, -1:].copy(),
                                            signature=signature(item)))  # fmt: skip
        return results
