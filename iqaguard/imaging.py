"""Decode and validate encoded images, and turn them into the teacher's pixels.

The one implementation used both by the serving preprocessor and by the build pipeline, so the
pixels a detector is fitted on are the pixels the server produces.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000  # width × height, checked from the header before decoding
DEFAULT_MAX_BYTES = 32 * 1024 * 1024

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")

# Refuse truncated files instead of silently half-decoding them.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# The contract's formats, recognised by their leading bytes before any decoder runs; Pillow is then
# asked to open the data with that one plugin only (never TIFF, ICO, PPM, or EPS's Ghostscript).
_SIGNATURES: tuple[tuple[str, tuple[tuple[int, bytes], ...]], ...] = (  # (Pillow format, (offset, magic)...)
    ("JPEG", ((0, b"\xff\xd8\xff"),)),
    ("PNG", ((0, b"\x89PNG\r\n\x1a\n"),)),
    ("GIF", ((0, b"GIF87a"),)),
    ("GIF", ((0, b"GIF89a"),)),
    ("BMP", ((0, b"BM"),)),
    ("WEBP", ((0, b"RIFF"), (8, b"WEBP"))),
)


# Why an input was refused, in a few words fit for a metric label (iqaguard_invalid_inputs_total{reason}).
INVALID_REASONS = ("empty", "unsupported_format", "undecodable", "corrupt", "too_large", "over_budget")


class InvalidImageError(ValueError):
    """An input that cannot be served; the message starts with "invalid image:", `kind` is one of INVALID_REASONS."""

    def __init__(self, reason: str, kind: str = "undecodable") -> None:
        if kind not in INVALID_REASONS:
            raise ValueError(f"unknown kind {kind!r}; one of {INVALID_REASONS}")
        super().__init__(f"invalid image: {reason}")
        self.kind = kind


def sniff_format(data: bytes) -> str:
    """The contract format `data` claims by its signature; InvalidImageError for anything else."""
    for image_format, parts in _SIGNATURES:
        if all(data[offset : offset + len(magic)] == magic for offset, magic in parts):
            return image_format
    raise InvalidImageError("unsupported format: only JPEG, PNG, BMP, WebP and GIF are accepted", "unsupported_format")


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> Image.Image:
    """Decode encoded image bytes into an 8-bit RGB image.

    Accepts the contract's formats only (JPEG, PNG, BMP, WebP, GIF), told by their signature before
    any decoder runs. Applies EXIF orientation, takes the first frame of animations, composites
    transparency over white and scales 16-bit input to 8 bits. Raises InvalidImageError with a clear
    reason for empty, oversized, unsupported, undecodable or truncated input; the pixel limit is
    checked from the header, before any pixel data is decoded.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidImageError(f"expected encoded bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidImageError("empty input", "empty")
    if len(data) > max_bytes:
        raise InvalidImageError(f"{len(data)} bytes exceeds the limit of {max_bytes} bytes", "too_large")
    image_format = sniff_format(data)
    try:
        with warnings.catch_warnings():
            # Our own limit applies; Pillow's global decompression-bomb guard is a backstop only.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[image_format])
    except Image.DecompressionBombError:
        raise InvalidImageError(
            f"header size exceeds the limit of {max_pixels} pixels (refused as a decompression bomb)", "too_large"
        ) from None
    except UnidentifiedImageError:
        raise InvalidImageError("cannot decode: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidImageError(f"cannot decode: {error}") from None

    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"degenerate size {width}x{height}")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} pixels", "too_large"
        )
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb8(image)
    except InvalidImageError:
        raise
    except Exception as error:  # Pillow raises many types for corrupt streams
        raise InvalidImageError(f"truncated or corrupt data ({error})", "corrupt") from None


def _to_rgb8(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise InvalidImageError(f"unsupported mode {mode} ({error})") from None


def to_pixels(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB image to (height, width) with bilinear filtering; return [3,H,W] float32 in [0,1]."""
    height, width = size
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def bytes_to_pixels(
    data: bytes,
    size: tuple[int, int],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """decode_image then to_pixels: encoded bytes to the teacher's [3,H,W] float32 input."""
    return to_pixels(decode_image(data, max_pixels=max_pixels, max_bytes=max_bytes), size)
