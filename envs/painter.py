"""Draws strokes with a libmypaint brush on a libmypaint surface, at any resolution."""

from __future__ import annotations

import numpy as np

from envs.libmypaint import Brush, Surface
from envs.limits import MAX_COORDINATE, check_points_per_stroke, surface_size
from envs.stroke import Stroke

# Seconds between two brush events. A power of two is exact in float32 and float64 alike, so
# the value libmypaint sees never depends on how it was rounded on the way in; it stays under
# libmypaint's 0.1 s threshold where it starts treating events as a tablet's pen re-entering.
DTIME = 1.0 / 64.0
# The pause before a stroke's first event. libmypaint smooths the pointer ("slow tracking")
# before it applies a requested reset, so a short pause would start the stroke part of the way
# from wherever the brush last was; after a pause this long (> its 5 s reset threshold) the
# smoothing has fully caught up and the stroke starts exactly at its start point.
START_DTIME = 8.0


class Painter:
    """A canvas of ``width`` x ``height`` canvas pixels, rendered ``scale`` times finer.

    Coordinates and brush radii are given in canvas pixels and multiplied by ``scale``, so the
    same strokes paint the same picture at 64 px for an agent and at 512 px for people.
    """

    def __init__(
        self,
        width: int,
        height: int,
        brush: str = "classic/dry_brush",
        background: tuple[int, int, int] = (255, 255, 255),
        scale: float = 1.0,
        points_per_stroke: int = 50,
    ):
        surface_width, surface_height = surface_size(width, height, scale)  # the pixel budget
        check_points_per_stroke(points_per_stroke)
        self.brush_name, self.background = brush, tuple(background)
        self.scale, self.points_per_stroke = float(scale), int(points_per_stroke)
        # Brush dynamics follow the pointer's speed in pixels per second: a canvas painted
        # ``scale`` times larger gets ``scale`` times more events, each ``DTIME`` apart, so the
        # brush moves at the same speed and a large rendering looks like the small one.
        self._events = max(2, round(points_per_stroke * scale))
        self.surface = Surface(surface_width, surface_height, self.background)
        self.brush = Brush(brush)

    def reset(self) -> None:
        """Blank the canvas and take a fresh brush, whose random jitter then replays exactly."""
        self.surface.clear(self.background)
        self.brush.close()
        self.brush = Brush(self.brush_name)

    def draw(self, stroke: Stroke) -> None:
        """Paint one stroke; a pen-up move paints nothing."""
        if not stroke.pen_down:
            return
        anchors = (*stroke.start, *stroke.control, *stroke.end)  # a Bézier stays within its anchors
        if not all(abs(coordinate) * self.scale < MAX_COORDINATE for coordinate in anchors):  # NaN fails too
            raise ValueError(
                f"Stroke {stroke.start} -> {stroke.control} -> {stroke.end} reaches too far: at render scale "
                f"{self.scale:g} strokes must stay within {MAX_COORDINATE / self.scale:g} canvas pixels of the "
                f"origin (envs.limits.MAX_COORDINATE; libmypaint aborts the process beyond 1e8)."
            )
        brush, surface = self.brush, self.surface
        brush.set_radius(stroke.size * self.scale)
        brush.set_color(stroke.color)
        brush.begin_stroke()
        points = stroke.points(self._events, self.scale).tolist()
        surface.begin_atomic()
        brush.stroke_through(surface, points[:1], 0.0, START_DTIME)  # pen onto the start, no paint
        brush.stroke_through(surface, points, stroke.pressure, DTIME)
        surface.end_atomic()

    def canvas(self) -> np.ndarray:
        """The canvas at the rendering resolution, (height, width, 3) uint8 RGB."""
        return self.surface.read()

    def close(self) -> None:
        self.brush.close()
        self.surface.close()


def agent_view(canvas: np.ndarray, scale: int) -> np.ndarray:
    """A canvas painted ``scale`` times larger, as the agent sees it: ``scale`` x ``scale`` blocks averaged."""
    if scale == 1:
        return canvas
    height, width = canvas.shape[0] // scale, canvas.shape[1] // scale
    blocks = canvas.reshape(height, scale, width, scale, 3).mean(axis=(1, 3), dtype=np.float32)
    return np.round(blocks).astype(np.uint8)
