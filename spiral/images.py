"""Opening images people hand us: any common format, safely, as 8-bit RGB.

Uploaded files can be anything: not an image, truncated, empty, a decompression bomb, 16-bit,
CMYK, palette or with transparency. ``open_image`` turns each of these into either an RGB image
(RGBA where the file has transparency: what lies under it is the painting agent's canvas colour,
which ``spiral.agent.Agent.prepare_target`` puts there) or a ``ValueError`` whose message says
what was wrong.

Only the formats the app offers (``FORMATS``) are decoded: Pillow would otherwise hand a
PostScript file to Ghostscript, where one is installed, and try a dozen rarely used decoders.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # a 40-megapixel photo is fine; a decompression bomb is not
MAX_BYTES = 256 * 2**20  # a 40-megapixel 16-bit TIFF fits; /dev/zero does not
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # Pillow's names; JPEG includes MPO (camera JPEGs)


def open_image(source: str | Path | bytes | BinaryIO, max_pixels: int = MAX_PIXELS,
               max_side: int | None = None) -> Image.Image:
    """The first frame of an image file as RGB, or RGBA where the file has transparency.

    With ``max_side``, a larger image comes back fitted into ``max_side`` x ``max_side``, its aspect kept,
    and a JPEG is decoded at a reduced scale to begin with: a 36-megapixel photo then never occupies
    its full 108 MB (a server painting uploads needs no more than its agents see). The file's own
    size stays in ``image.info["original_size"]``.
    """
    data = _read(source)
    if not data:
        raise ValueError("The file is empty.")
    try:
        with warnings.catch_warnings():
            # Pillow warns of images over its own limit; ours (max_pixels) is lower and refuses them below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise ValueError(f"The image is {width}x{height} pixels, more than the {max_pixels:,} allowed.")
        if width < 1 or height < 1:
            raise ValueError(f"The image is {width}x{height} pixels: it has no pixels to paint.")
        image.seek(0)  # animated GIF, multi-page TIFF: the first frame
        if max_side is not None:
            image.draft(None, (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale; others: no-op
        image.load()
    except UnidentifiedImageError as error:
        raise ValueError("The file is not an image this program can read (PNG, JPEG, WebP, GIF, BMP, TIFF).") from error
    except Image.DecompressionBombError as error:  # declared far over Pillow's limit, refused before decoding
        raise ValueError(f"The image is larger than the {max_pixels:,} pixels allowed: {error}") from error
    except (OSError, SyntaxError, EOFError) as error:
        raise ValueError(f"The image file is corrupt or truncated: {error}") from error
    converted = _to_rgb_or_rgba(image)
    if max_side is not None:
        converted.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    converted.info["original_size"] = (width, height)
    return converted


def _read(source: str | Path | bytes | BinaryIO) -> bytes:
    """At most ``MAX_BYTES`` of a file, a byte string or a binary stream; a ValueError beyond."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.exists() and not path.is_file():  # a folder, /dev/zero, a named pipe
            raise ValueError(f"{path} is not an image file: it is not a regular file.")
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    else:
        data = source if isinstance(source, (bytes, bytearray, memoryview)) else source.read(MAX_BYTES + 1)
        data = bytes(data)
    if len(data) > MAX_BYTES:
        raise ValueError(f"The file is larger than the {MAX_BYTES // 2**20} MiB an image may have.")
    return data


def _to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16-bit, 32-bit and float greyscale: rescale
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]  # a float image may hold NaN and infinities: black and the extremes
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.round().astype(np.uint8))
    return image.convert("RGBA" if _has_transparency(image) else "RGB")


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """An RGB image: one with transparency composited over ``background``, any other converted."""
    if not _has_transparency(image):
        return image.convert("RGB")
    return Image.alpha_composite(Image.new("RGBA", image.size, (*background, 255)), image.convert("RGBA")).convert("RGB")


def is_light_on_dark_line_art(image: Image.Image) -> bool:
    """Whether a picture looks like MNIST: light lines on a dark ground, without colour.

    It is mostly dark (60% of pixels below a quarter of full brightness), grey (channels within
    10% of each other on average) and its light part is mostly lines rather than mid-tones (under
    60% of it between a quarter and three quarters). 98% of MNIST's and all of the glyphs' test
    images pass, no photo crop of the ``photos`` dataset does, and a night photo's soft grey
    areas keep it out. ``spiral.shipped.default_agent`` sends such a picture to the white-on-black
    line agents and anything else to the colour agent.
    """
    shown = flatten(image, (255, 255, 255))  # transparency as a viewer shows it, over white
    pixels = np.asarray(shown.resize((64, 64), Image.Resampling.BILINEAR), np.float32) / 255
    grey = pixels.mean(-1)
    light = grey >= 0.25
    colour = float((pixels.max(-1) - pixels.min(-1)).mean())
    mid_tones = float((light & (grey < 0.75)).sum() / max(light.sum(), 1))
    return colour < 0.1 and float((~light).mean()) >= 0.6 and mid_tones < 0.6
