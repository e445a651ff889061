"""How large a surface libmypaint may be asked for, checked in Python before the C library sees it.

libmypaint sizes a fixed surface with 32-bit ``int`` arithmetic and ``assert``s on the result:
a 64000x64000 surface overflows it and the process aborts before Python can say anything.
Program files are shared, so a canvas size and a render scale are untrusted input. Every place
that makes a surface (``PaintConfig``, ``Painter``, ``Program`` loading and rendering, the
command line and the app) goes through ``surface_size``, which refuses anything over one
budget, ``MAX_SURFACE_PIXELS``, with ``CanvasTooLargeError``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

TILE_SIZE = 64  # libmypaint allocates whole tiles of this many pixels square

# The pixel budget of one libmypaint surface: 4096 x 4096 = 16,777,216 pixels, counted as the
# surface is allocated (width and height each rounded up to whole 64-pixel tiles, so a long thin
# surface cannot hide a huge allocation). It holds a 4096 px print of any program, the app's
# 1024 px re-renders and render_scale 4 at 256 px (1024 x 1024) with room to spare, and stays 128
# times below libmypaint's 32-bit overflow (2**31 pixels). It also bounds the memory of one
# rendering: libmypaint's fix15 RGBA tiles, our copy of them, the RGB canvas and the float
# conversion take about 38 bytes a pixel, so about 0.6 GB at the limit (64 megapixels would
# need 2.5 GB, more than a laptop should give to one picture).
MAX_SURFACE_PIXELS = 4096 * 4096

# libmypaint aborts the process (an ``assert``) on a brush event 1e8 pixels or more from the
# origin; a stroke is refused well before that.
MAX_COORDINATE = 1e7


# Brush events along one stroke: the default is 50, and a rendering at scale s sends 50 * s of them.
# A program file sets its own count, so it is bounded like a size (1e9 of them took 7 GiB).
MAX_POINTS_PER_STROKE = 10_000

# Cells per side of the grid that end and control points are chosen on. Each of those policy
# heads has grid² choices, so the action space grows with its square: 256² = 65,536 cells.
MAX_GRID_SIZE = 256


# Levels of pressure and of each colour channel (each a policy head of that many choices), radii
# to choose from, and strokes per episode: generous bounds that keep a shared agent.json or
# preset from asking for gigabytes of action tables or an episode that never ends.
MAX_LEVELS = 256
MAX_BRUSH_SIZES = 64
MAX_EPISODE_LENGTH = 1000


def check_points_per_stroke(points) -> int:
    """A count of brush events per stroke, or a ValueError unless it is an int in 2..MAX_POINTS_PER_STROKE."""
    if isinstance(points, bool) or not isinstance(points, Integral) or not 2 <= points <= MAX_POINTS_PER_STROKE:
        raise ValueError(f"points_per_stroke must be an int in 2..{MAX_POINTS_PER_STROKE:,} "
                         f"(envs.MAX_POINTS_PER_STROKE), got {points!r}.")
    return int(points)


class CanvasTooLargeError(ValueError):
    """A canvas, render scale or re-render size asks for more than ``MAX_SURFACE_PIXELS``."""


class SurfaceAllocationError(CanvasTooLargeError, MemoryError):
    """A surface within the budget that this machine could still not allocate."""


def _budget() -> str:
    side = math.isqrt(MAX_SURFACE_PIXELS)
    square = f"{side}x{side}, " if side * side == MAX_SURFACE_PIXELS else ""
    return f"{MAX_SURFACE_PIXELS:,} pixels ({square}envs.MAX_SURFACE_PIXELS)"


def allocated_pixels(width: int, height: int) -> int:
    """Pixels libmypaint allocates for a ``width`` x ``height`` surface: whole 64-pixel tiles."""
    return -(-width // TILE_SIZE) * TILE_SIZE * (-(-height // TILE_SIZE) * TILE_SIZE)


def check_scale(scale) -> float:
    """A render scale as a float, or a ValueError unless it is a finite number > 0."""
    if isinstance(scale, bool) or not isinstance(scale, Real) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"Render scale must be a finite number > 0, got {scale!r}.")
    return float(scale)


def surface_size(width: int, height: int, scale: float = 1.0) -> tuple[int, int]:
    """The ``(width, height)`` in pixels of a ``width`` x ``height`` canvas rendered at ``scale``.

    Each side is ``max(1, round(side * scale))``. Raises ``ValueError`` for a size that is not a
    positive int or a scale that is not a finite number > 0, and ``CanvasTooLargeError`` (a
    ValueError) when the surface would exceed ``MAX_SURFACE_PIXELS``, naming the size asked for.
    """
    for side in (width, height):
        if isinstance(side, bool) or not isinstance(side, Integral) or side < 1:
            raise ValueError(f"Canvas size must be positive ints, got {width!r}x{height!r}.")
    scale = check_scale(scale)
    width, height = int(width), int(height)
    scaled = (width * scale, height * scale)
    at_scale = f" ({width}x{height} at scale {scale:g})" if scale != 1 else ""
    if not all(math.isfinite(side) for side in scaled):
        raise CanvasTooLargeError(f"A {width}x{height} canvas at scale {scale:g} has no finite size; "
                                  f"a surface may hold at most {_budget()}.")
    surface_width, surface_height = (max(1, round(side)) for side in scaled)
    pixels = allocated_pixels(surface_width, surface_height)
    if pixels > MAX_SURFACE_PIXELS:
        tiled = "" if pixels == surface_width * surface_height else f" in libmypaint's {TILE_SIZE}-pixel tiles"
        raise CanvasTooLargeError(
            f"A {surface_width}x{surface_height} surface{at_scale} is {pixels:,} pixels{tiled}; the limit is "
            f"{_budget()}: use a smaller canvas or scale."
        )
    return surface_width, surface_height
