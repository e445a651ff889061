"""One brush stroke: a quadratic Bézier curve with pressure, size and colour, or a pen-up move.

Strokes are plain data in canvas pixel coordinates (x to the right, y down, the canvas spans
``[0, width] x [0, height]``), so they serialise to JSON, replay exactly and scale to any
resolution.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np

from envs.limits import MAX_COORDINATE

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Stroke:
    """A pen-down quadratic Bézier ``start -> control -> end``, or a pen-up move to ``end``.

    ``size`` is the brush radius in canvas pixels, ``pressure`` is in (0, 1] and ``color`` is
    RGB in [0, 1]. A move paints nothing; its other fields are kept so a program reads evenly.
    Strokes from untrusted sources go through ``from_dict``, which checks every field.
    """

    start: Point
    control: Point
    end: Point
    pen_down: bool
    size: float
    pressure: float
    color: tuple[float, float, float]

    def to_dict(self) -> dict:
        """A JSON-ready dict (points become lists); ``Stroke.from_dict`` inverts it exactly."""
        return asdict(self) | {name: list(getattr(self, name)) for name in ("start", "control", "end", "color")}

    @classmethod
    def from_dict(cls, data: dict) -> Stroke:
        """Rebuild a stroke from untrusted data, saying which field is wrong if one is."""
        if not isinstance(data, dict):
            raise ValueError(f"Not a stroke: {data!r}.")
        missing = {"start", "control", "end", "pen_down", "size", "pressure", "color"} - set(data)
        if missing:
            raise ValueError(f"Stroke is missing {sorted(missing)}: {data!r}.")
        try:
            points = {name: _point(data[name]) for name in ("start", "control", "end")}
            color = tuple(float(channel) for channel in data["color"])
            size, pressure = float(data["size"]), float(data["pressure"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"Malformed stroke {data!r}: {error}.") from error
        if not (math.isfinite(size) and size > 0):
            raise ValueError(f"Stroke size (brush radius in pixels) must be > 0, got {size!r}.")
        if not 0.0 < pressure <= 1.0:
            raise ValueError(f"Stroke pressure must be in (0, 1], got {pressure!r}.")
        if len(color) != 3 or not all(0.0 <= channel <= 1.0 for channel in color):
            raise ValueError(f"Stroke color must be three values in [0, 1], got {data['color']!r}.")
        if not isinstance(data["pen_down"], bool):
            raise ValueError(f"Stroke pen_down must be true or false, got {data['pen_down']!r}.")
        return cls(**points, pen_down=data["pen_down"], size=size, pressure=pressure, color=color)

    def points(self, count: int, scale: float = 1.0) -> np.ndarray:
        """``count`` points along the curve, evenly spaced in the curve parameter, times ``scale``."""
        anchors = np.array([self.start, self.control, self.end])
        return _bezier_basis(count) @ (anchors * scale if scale != 1.0 else anchors)


def _point(value) -> Point:
    x, y = (float(coordinate) for coordinate in value)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"a point must be two finite numbers, got {value!r}")
    if not (abs(x) < MAX_COORDINATE and abs(y) < MAX_COORDINATE):
        raise ValueError(f"a point must lie within {MAX_COORDINATE:g} pixels of the canvas origin, got {value!r}")
    return (x, y)


@functools.cache
def _bezier_basis(count: int) -> np.ndarray:
    """The (count, 3) Bernstein weights of a quadratic Bézier at t = 0 .. 1."""
    t = np.linspace(0.0, 1.0, count)[:, None]
    return np.hstack([(1 - t) ** 2, 2 * (1 - t) * t, t**2])
