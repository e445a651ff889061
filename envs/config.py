"""The settings of a painting environment, as one JSON-serialisable, validated value."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from envs.limits import (
    MAX_BRUSH_SIZES,
    MAX_EPISODE_LENGTH,
    MAX_GRID_SIZE,
    MAX_LEVELS,
    CanvasTooLargeError,
    check_points_per_stroke,
    surface_size,
)

# What the environment itself may reward (the learner's reward modes are spiral.rewards.LEARNER_REWARD_MODES).
IN_ENV_REWARDS = ("none", "l2-final", "l2-step")


@dataclass(frozen=True)
class PaintConfig:
    """What the canvas, the brush and the action space look like.

    Attributes:
        canvas_size: (height, width) in pixels the agent sees, or one int for a square canvas.
            Any size works, not only multiples of libmypaint's 64-pixel tiles.
        render_scale: libmypaint paints at ``render_scale`` times the canvas size and the agent
            sees an area-averaged downsample (SPIRAL++ paints at 256 and shows 64: scale 4).
        grid_size: the end and control points are cells of a ``grid_size`` x ``grid_size`` grid.
        episode_length: strokes per episode (SPIRAL: 20).
        brush: a brush of the mypaint-brushes collection (``classic/dry_brush``) or a .myb path.
        brush_sizes: brush radii in canvas pixels the ``size`` component chooses from.
        pressure_levels: pressure levels, evenly spaced over 0.1 .. 1.0.
        color_levels: levels per RGB channel, evenly spaced over 0 .. 1.
        use_size, use_pressure, use_color: when False the component leaves the action space and
            every stroke uses ``fixed_size``, ``fixed_pressure`` or ``fixed_color``.
        use_flag: when False the pen flag leaves the action space and every stroke paints. Where
            random strokes score worse than a blank canvas (white on black), a trainable flag
            invites the "never paint" collapse before the agent has learned where to paint.
        fit_color: each stroke takes the colour level of least squared error to the target under its
            footprint (``envs.color_fit``), whatever colour the action chose: the agent decides where
            and how to paint, the target the colour. Needs ``use_color`` and a target (a conditional
            ``PaintEnv``); the stroke and the recorded action carry the fitted colour, so programs
            replay exactly without the target.
        background: canvas colour, 0..255 RGB. ``fixed_color`` is 0..255 RGB too.
        reward: ``none`` (training computes every reward on the learner, see ``spiral.rewards``),
            ``l2-final`` (minus the mean squared error to the target at the last step) or
            ``l2-step`` (its improvement at every step; the sum over an episode equals the final
            improvement). The in-env rewards serve gymnasium users outside ``spiral`` training.
        points_per_stroke: brush events sampled along each Bézier curve.
    """

    canvas_size: tuple[int, int] = (64, 64)
    render_scale: int = 1
    grid_size: int = 32
    episode_length: int = 20
    brush: str = "classic/dry_brush"
    brush_sizes: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 12.0, 24.0)
    pressure_levels: int = 10
    color_levels: int = 20
    use_size: bool = True
    use_pressure: bool = True
    use_color: bool = True
    use_flag: bool = True
    fit_color: bool = False
    fixed_size: float = 2.0
    fixed_pressure: float = 1.0
    fixed_color: tuple[int, int, int] = (0, 0, 0)
    background: tuple[int, int, int] = (255, 255, 255)
    reward: str = "none"
    points_per_stroke: int = 50

    def __post_init__(self) -> None:
        size = self.canvas_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        object.__setattr__(self, "canvas_size", size)
        object.__setattr__(self, "brush_sizes", tuple(float(s) for s in self.brush_sizes))
        object.__setattr__(self, "fixed_color", tuple(self.fixed_color))
        object.__setattr__(self, "background", tuple(self.background))
        problems = []
        if len(size) != 2 or not all(_is_int(s) and s >= 1 for s in size):
            problems.append(f"canvas_size must be a positive int or (height, width), got {self.canvas_size!r}")
        for name in ("render_scale", "grid_size", "episode_length", "pressure_levels", "color_levels"):
            value = getattr(self, name)
            if not _is_int(value) or value < (2 if name.endswith("levels") else 1):
                problems.append(f"{name} must be an int >= {2 if name.endswith('levels') else 1}, got {value!r}")
        for name, limit in (("grid_size", MAX_GRID_SIZE), ("pressure_levels", MAX_LEVELS),
                            ("color_levels", MAX_LEVELS), ("episode_length", MAX_EPISODE_LENGTH)):
            if _is_int(getattr(self, name)) and getattr(self, name) > limit:
                problems.append(f"{name} must be at most {limit} (envs.limits), got {getattr(self, name)}")
        for name in ("use_size", "use_pressure", "use_color", "use_flag", "fit_color"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.fit_color is True and self.use_color is False:
            problems.append("fit_color chooses among the colour levels of the action space: it needs use_color = true")
        if not isinstance(self.brush, str) or not self.brush:
            problems.append(f"brush must be a brush name or a .myb path, got {self.brush!r}")
        try:
            check_points_per_stroke(self.points_per_stroke)
        except ValueError as error:
            problems.append(str(error).rstrip("."))
        if not 0 < len(self.brush_sizes) <= MAX_BRUSH_SIZES or not all(0 < r < math.inf for r in self.brush_sizes):
            problems.append(f"brush_sizes must be 1 to {MAX_BRUSH_SIZES} finite positive radii, got {self.brush_sizes!r}")
        if not 0 < self.fixed_size < math.inf or not 0 < self.fixed_pressure <= 1:
            problems.append(f"fixed_size must be > 0 and fixed_pressure in (0, 1], got "
                            f"{self.fixed_size!r}, {self.fixed_pressure!r}")
        for name in ("fixed_color", "background"):
            color = getattr(self, name)
            if len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
                problems.append(f"{name} must be three ints in 0..255, got {color!r}")
        if self.reward not in IN_ENV_REWARDS:
            problems.append(f"reward must be one of {IN_ENV_REWARDS}, got {self.reward!r}")
        too_large = False
        try:  # the surface libmypaint paints on, canvas_size times render_scale, within the pixel budget
            surface_size(*size[::-1], self.render_scale)
        except CanvasTooLargeError as error:
            problems.append(f"canvas_size {size} at render_scale {self.render_scale}: {error}")
            too_large = True
        except (ValueError, TypeError):
            pass  # a malformed size or scale, already among the problems
        if problems:
            error = CanvasTooLargeError if too_large else ValueError
            raise error("Invalid PaintConfig: " + "; ".join(problems) + ".")

    @property
    def height(self) -> int:
        return self.canvas_size[0]

    @property
    def width(self) -> int:
        return self.canvas_size[1]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; ``PaintConfig(**config.to_dict())`` gives the same config back."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PaintConfig:
        """Build a config, naming any key that is not a setting instead of ignoring it."""
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"Unknown PaintConfig setting(s) {unknown}; known: {sorted(known)}.")
        return cls(**data)


def _is_int(value: Any) -> bool:
    """An int that is not a bool (``True`` is an int to Python, not a size to a painter)."""
    return isinstance(value, int) and not isinstance(value, bool)
