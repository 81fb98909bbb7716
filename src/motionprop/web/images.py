"""Uploaded images for the web app: only PNG, JPEG and WebP, size and pixel count capped before decoding.

A decompression bomb (a small file that decodes to billions of pixels) is
refused from its header, before a pixel is decoded: Pillow's ``Image.open``
reads only the header, so the format and the size are known first. JPEG
EXIF orientation is applied, so coordinates are those of the upright image
the browser shows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")


@dataclass(frozen=True)
class UploadLimits:
    """Caps on an uploaded image: file bytes, decoded pixels, and the shorter side."""

    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 8


def _sniff(data: bytes) -> None:
    if not any(data.startswith(m) for m in MAGIC) or (data.startswith(b"RIFF") and data[8:12] != b"WEBP"):
        raise InputError("not a PNG, JPEG or WebP image")


def decode_upload(data: bytes, limits: UploadLimits = UploadLimits()) -> np.ndarray:
    """The uploaded bytes as an upright (H, W, 3) uint8 RGB image; an InputError says why not."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(data) == 0:
        raise InputError("empty upload: send the image file as the request body")
    if len(data) > limits.max_bytes:
        raise InputError(f"image file is {len(data)} bytes; the limit is {limits.max_bytes}")
    _sniff(data)
    try:
        with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as image:  # header only
            width, height = image.size
            if width * height > limits.max_pixels:
                raise InputError(f"image is {width}x{height} = {width * height} pixels; the limit is "
                                 f"{limits.max_pixels}")
            if min(width, height) < limits.min_side:
                raise InputError(f"image is {width}x{height}; each side must be at least {limits.min_side} px")
            image = ImageOps.exif_transpose(image)  # decodes; honours EXIF orientation
            rgb = np.array(image.convert("RGB"))  # writable, for torch
    except InputError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own cap, reached in the header too
        raise InputError(f"image is too large ({exc}); the limit is {limits.max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot decode the image ({type(exc).__name__}: {exc})") from None
    return np.ascontiguousarray(rgb, dtype=np.uint8)
