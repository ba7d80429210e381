"""Encoded test images, good and bad, built with Pillow from real photos."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image | np.ndarray, fmt: str, **save_args: object) -> bytes:
    """Encode an image (or uint8/uint16 array) with Pillow."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def slow_requests(photo: np.ndarray, ordinary: int) -> list[list[bytes]]:
    """Requests that keep a server busy for seconds: first one large request (16 noise WebP images of
    3 Mpx, the slowest format to decode per pixel: one at a time, at low priority), then `ordinary`
    requests of 16 photos of 0.7 Mpx each (11.2 Mpx in total, under the checked-in large_request_pixels)."""
    noise = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    large = encode(noise, "WEBP", quality=90)
    photos = encode(Image.fromarray(photo).resize((1000, 700)), "JPEG", quality=95)
    return [[large] * 16] + [[photos] * 16 for _ in range(ordinary)]


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width×height pixels, with a token IDAT: a decompression bomb's header."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    token_data = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", token_data) + chunk(b"IEND", b"")


def animated_gif(photo: np.ndarray) -> bytes:
    """A three-frame GIF whose first frame is the photo."""
    frames = [Image.fromarray(photo), Image.fromarray(255 - photo), Image.fromarray(photo[:, ::-1])]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def good_images(photo: np.ndarray) -> dict[str, bytes]:
    """Inputs the server must answer correctly (every mode/format the contract lists)."""
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    rgba = np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise on display
    return {
        "jpeg": encode(photo, "JPEG", quality=90),
        "png": encode(photo, "PNG"),
        "bmp": encode(photo, "BMP"),
        "webp": encode(photo, "WEBP", quality=80),
        "greyscale png": encode(grey, "PNG"),
        "16-bit png": encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"),
        "cmyk jpeg": encode(Image.fromarray(photo).convert("CMYK"), "JPEG"),
        "rgba png": encode(rgba, "PNG"),
        "palette png": encode(Image.fromarray(photo).convert("P"), "PNG"),
        "animated gif": animated_gif(photo),
        "exif-rotated jpeg": encode(photo, "JPEG", exif=exif.tobytes()),
        "1x1 png": encode(photo[:1, :1], "PNG"),
    }


def bad_images(photo: np.ndarray) -> dict[str, bytes]:
    """Inputs the server must refuse with a clear `invalid image` error."""
    jpeg, png = encode(photo, "JPEG"), encode(photo, "PNG")
    return {
        "empty": b"",
        "random bytes": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "truncated png": png[: len(png) // 2],
        "text file": b"name,score\nalice,3\nbob,4\n" * 20,
        "png claiming 50000x50000": png_header_claiming(50000, 50000),
        "jpeg magic only": b"\xff\xd8\xff\xe0",
        # Decodable by Pillow, but outside the contract: refused by signature before any decoder runs.
        "tiff": encode(photo, "TIFF"),
        "ppm": encode(photo, "PPM"),
        "ico": encode(photo[:32, :32], "ICO"),
        "eps (would need Ghostscript)": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n",
        "riff but not webp": b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32),
    }
