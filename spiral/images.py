"""Opening images people hand us: any common format, safely, as 8-bit RGB.

Uploaded files can be anything: not an image, truncated, empty, a decompression bomb, 16-bit,
CMYK, palette or with transparency. ``open_image`` turns each of these into either an RGB
image or a ``ValueError`` whose message says what was wrong.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # a 40-megapixel photo is fine; a decompression bomb is not


def open_image(source: str | Path | bytes | BinaryIO, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The first frame of an image file as RGB; transparency is composited over white."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    data = data if isinstance(data, bytes) else data.read()
    if not data:
        raise ValueError("The file is empty.")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ValueError(f"The image is {width}x{height} pixels, more than the {max_pixels:,} allowed.")
        image.seek(0)  # animated GIF, multi-page TIFF: the first frame
        image.load()
    except UnidentifiedImageError as error:
        raise ValueError("The file is not an image this program can read (PNG, JPEG, WebP, GIF, BMP, TIFF).") from error
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"The image file is corrupt or truncated: {error}") from error
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit and float greyscale: rescale
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
