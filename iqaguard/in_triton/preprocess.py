"""The iqa_preprocess model's work, free of Triton: bytes per request in, pixels + IQA out.

Each request's images are decoded on their own, so one bad image fails only its request; the
pixels of all good requests are scored by BRISQUE in one vectorised call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from iqaguard.imaging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, InvalidImageError, bytes_to_pixels
from iqaguard.iqa import brisque


@dataclass(frozen=True)
class PreprocessResult:
    """One request's outputs: pixels [B,3,H,W], IQA vector [B,37], BRISQUE score [B,1]."""

    pixels: np.ndarray
    iqa: np.ndarray
    quality: np.ndarray


class Preprocessor:
    """Turns batches of requests (each a list of encoded images) into teacher inputs and IQA."""

    def __init__(
        self,
        size: tuple[int, int],
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.size = size
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes

    def _decode_request(self, images: Sequence[bytes]) -> np.ndarray:
        if len(images) == 0:
            raise InvalidImageError("request holds no image")
        pixels = []
        for index, data in enumerate(images):
            try:
                pixels.append(bytes_to_pixels(data, self.size, self.max_pixels, self.max_bytes))
            except InvalidImageError as error:
                if len(images) == 1:
                    raise
                raise InvalidImageError(f"item {index}: {str(error).removeprefix('invalid image: ')}") from None
        return np.stack(pixels)

    def run(self, requests: Sequence[Sequence[bytes]]) -> list[PreprocessResult | InvalidImageError]:
        """Preprocess every request; a failed request yields its InvalidImageError in its slot."""
        decoded: list[np.ndarray | InvalidImageError] = []
        for images in requests:
            try:
                decoded.append(self._decode_request(images))
            except InvalidImageError as error:
                decoded.append(error)
        good = [item for item in decoded if isinstance(item, np.ndarray)]
        if not good:
            return list(decoded)  # type: ignore[arg-type]
        iqa_all = brisque(np.concatenate(good))
        results: list[PreprocessResult | InvalidImageError] = []
        offset = 0
        for item in decoded:
            if isinstance(item, InvalidImageError):
                results.append(item)
                continue
            iqa = iqa_all[offset : offset + len(item)]
            offset += len(item)
            results.append(PreprocessResult(pixels=item, iqa=iqa, quality=iqa[:, -1:].copy()))
        return results
