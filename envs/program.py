"""A painting as a program: the list of strokes is the record, pixels are derived by replay.

A ``Program`` serialises to JSON (floats round-trip exactly, so a replay is bit for bit the
canvas the environment showed), renders at any resolution with the real brush, and exports to
SVG for people who want vectors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.limits import check_points_per_stroke, surface_size
from envs.painter import Painter
from envs.storage import FileFormat, write_file
from envs.stroke import Stroke

PROGRAM_FORMAT = FileFormat("spiral-program", 1, "spiral painting program")


@dataclass
class Program:
    """Everything needed to repaint a canvas: its size, brush, background and strokes."""

    width: int
    height: int
    strokes: list[Stroke] = field(default_factory=list)
    brush: str = "classic/dry_brush"
    background: tuple[int, int, int] = (255, 255, 255)
    points_per_stroke: int = 50

    def surface_size(self, scale: float = 1.0) -> tuple[int, int]:
        """The (width, height) a rendering at ``scale`` has, or ``CanvasTooLargeError`` over the pixel budget."""
        return surface_size(self.width, self.height, scale)

    def painter(self, scale: float = 1.0) -> Painter:
        """A blank painter for this program's canvas at ``scale`` times its size (within the pixel budget)."""
        return Painter(self.width, self.height, self.brush, self.background, scale, self.points_per_stroke)

    def frames(self, scale: float = 1.0) -> Iterator[np.ndarray]:
        """The blank canvas, then the canvas after each stroke: ``len(strokes) + 1`` frames."""
        painter = self.painter(scale)
        try:
            canvas = painter.canvas()
            yield canvas
            for stroke in self.strokes:
                if stroke.pen_down:
                    painter.draw(stroke)
                    canvas = painter.canvas()
                yield canvas
        finally:
            painter.close()

    def render(self, scale: float = 1.0) -> np.ndarray:
        """The final canvas, (round(height * scale), round(width * scale), 3) uint8 RGB."""
        painter = self.painter(scale)
        try:
            for stroke in self.strokes:
                painter.draw(stroke)
            return painter.canvas()
        finally:
            painter.close()

    def to_dict(self) -> dict:
        return PROGRAM_FORMAT.stamp({
            "width": self.width,
            "height": self.height,
            "brush": self.brush,
            "background": list(self.background),
            "points_per_stroke": self.points_per_stroke,
            "strokes": [stroke.to_dict() for stroke in self.strokes],
        })

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict, source: str = "the data") -> Program:
        """Rebuild a program, refusing anything that is not one with a message that says why."""
        return cls._from_body(PROGRAM_FORMAT.check(data, source))

    @classmethod
    def from_json(cls, text: str, source: str = "the text") -> Program:
        return cls._from_body(PROGRAM_FORMAT.parse(text, source))

    @classmethod
    def load(cls, path: str | Path) -> Program:
        return cls._from_body(PROGRAM_FORMAT.read(Path(path)))

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically: an interrupted save leaves the old file, never half a program."""
        text = self.to_json()
        write_file(path, lambda staging: staging.write_text(text))

    @classmethod
    def _from_body(cls, data: dict) -> Program:
        """A program from a document whose format header has been checked."""
        try:
            width, height = int(data["width"]), int(data["height"])
            background = tuple(int(channel) for channel in data["background"])
            strokes = [Stroke.from_dict(stroke) for stroke in data["strokes"]]
            program = cls(width, height, strokes, str(data["brush"]), background, int(data["points_per_stroke"]))
        except (KeyError, TypeError, OverflowError) as error:  # OverflowError: an infinite size
            raise ValueError(f"Malformed spiral program: {error!r}.") from error
        if width < 1 or height < 1 or len(background) != 3 or not all(0 <= c <= 255 for c in background):
            raise ValueError(f"Malformed spiral program: size {width}x{height}, background {background}.")
        program.surface_size()  # a canvas over the pixel budget is refused here, not when it is painted
        check_points_per_stroke(program.points_per_stroke)
        return program

    def to_svg(self, scale: float = 1.0) -> str:
        """The strokes as SVG quadratic Bézier paths.

        Vectors approximate the brush: each stroke is a round-capped line as wide as the brush
        and as opaque as its pressure, without the brush's texture or dynamics.
        """
        width, height = self.width * scale, self.height * scale
        lines = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" '
            f'viewBox="0 0 {self.width} {self.height}">',
            f'<rect width="{self.width}" height="{self.height}" fill="{_hex(self.background)}"/>',
        ]
        for stroke in self.strokes:
            if stroke.pen_down:
                (x0, y0), (cx, cy), (x1, y1) = stroke.start, stroke.control, stroke.end
                color = _hex(tuple(round(255 * channel) for channel in stroke.color))
                lines.append(
                    f'<path d="M {x0:.3f} {y0:.3f} Q {cx:.3f} {cy:.3f} {x1:.3f} {y1:.3f}" fill="none" '
                    f'stroke="{color}" stroke-width="{2 * stroke.size:g}" stroke-opacity="{stroke.pressure:.3f}" '
                    'stroke-linecap="round"/>'
                )
        lines.append("</svg>")
        return "\n".join(lines) + "\n"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)
