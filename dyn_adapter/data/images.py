"""Image files to uint8 RGB arrays, one way for prepared data and for served requests: grey,
palette and RGBA to RGB (alpha dropped, as torchvision's loader does), 16-bit scaled to 8-bit,
resized bicubic to the prepared size."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class BadImage(Exception):
    """An image file that cannot be used; ``str(e)`` is the reason."""


def read_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the image header, without decoding the pixels.

    Raises:
        BadImage: An empty, unreadable or unrecognised file.
    """
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty file (0 bytes)")
        with Image.open(path) as img:
            width, height = img.size
    except BadImage:
        raise
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise BadImage(f"not a readable image ({_why(e, path)})") from None
    return height, width


def read_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode an image file to uint8 RGB ``[H, W, 3]`` of ``size`` (``(H, W)``).

    Raises:
        BadImage: The file cannot be decoded (corrupt, truncated).
    """
    try:
        return decode_rgb(path, size)
    except Exception as e:  # see read_size
        reason = "truncated image" if "truncated" in str(e) else "corrupt image"
        raise BadImage(f"{reason} ({_why(e, path)})") from None


def decode_rgb(file: Path | BinaryIO, size: tuple[int, int]) -> np.ndarray:
    """Decode every pixel of ``file`` (truncated files fail here, not later) to uint8 RGB
    ``[H, W, 3]`` of ``size`` (``(H, W)``), bicubic if resized. Raises what PIL raises."""
    with Image.open(file) as img:
        img.load()
        rgb = to_rgb8(img)
    height, width = size
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def _why(e: Exception, path: Path) -> str:
    # PIL names the local file; the caller names it as the user knows it (maybe an s3:// URL).
    return f"{type(e).__name__}: {str(e).replace(str(path), path.name)}"


def to_rgb8(img: Image.Image) -> Image.Image:
    if img.mode in SIXTEEN_BIT_MODES:
        # PIL's own conversion clips 16-bit values at 255 instead of scaling them.
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    return img if img.mode == "RGB" else img.convert("RGB")
