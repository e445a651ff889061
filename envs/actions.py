"""SPIRAL's action space: one ``MultiDiscrete`` vector per stroke, decoded into a ``Stroke``.

Components, in this order (the order a policy's autoregressive heads choose them in):

=========  ==================  ==============================================================
name       values              meaning
=========  ==================  ==============================================================
flag       2                   0: move the pen up to ``end`` (paints nothing); 1: paint
end        grid_size ** 2      cell of the stroke's end point, row-major (``row * grid + col``)
control    grid_size ** 2      cell of the Bézier control point, same numbering
size       len(brush_sizes)    brush radius ``brush_sizes[i]`` in canvas pixels
pressure   pressure_levels     pressure ``0.1 + 0.9 * i / (levels - 1)``
red        color_levels        red ``i / (levels - 1)``
green      color_levels        green, likewise
blue       color_levels        blue, likewise
=========  ==================  ==============================================================

``flag``, ``size``, ``pressure`` and the three colour channels are left out when the config
turns them off (without a flag every stroke paints); the remaining components keep their
relative order. A point is the centre of its cell.
"""

from __future__ import annotations

import operator

import numpy as np
from gymnasium import spaces

from envs.config import PaintConfig
from envs.stroke import Point, Stroke

COMPONENTS = ("flag", "end", "control", "size", "pressure", "red", "green", "blue")
MOVE, PAINT = 0, 1


class InvalidActionError(ValueError):
    """An action that is not a valid stroke: wrong shape, not integral, or out of range."""


class ActionCodec:
    """Knows the action space of one config and turns its actions into strokes."""

    def __init__(self, config: PaintConfig):
        self.config = config
        cells = config.grid_size**2
        sizes = {
            "flag": 2 if config.use_flag else 0,
            "end": cells,
            "control": cells,
            "size": len(config.brush_sizes) if config.use_size else 0,
            "pressure": config.pressure_levels if config.use_pressure else 0,
            "red": config.color_levels if config.use_color else 0,
            "green": config.color_levels if config.use_color else 0,
            "blue": config.color_levels if config.use_color else 0,
        }
        self.names: tuple[str, ...] = tuple(name for name in COMPONENTS if sizes[name])
        self.nvec = np.array([sizes[name] for name in self.names], dtype=np.int64)
        self.index = {name: i for i, name in enumerate(self.names)}
        self._sizes = self.nvec.tolist()
        grid, width, height = config.grid_size, config.width, config.height
        self._centers = [((col + 0.5) * width / grid, (row + 0.5) * height / grid)
                         for row in range(grid) for col in range(grid)]
        self.space = spaces.MultiDiscrete(self.nvec)
        self._pressures = np.linspace(0.1, 1.0, config.pressure_levels).tolist()
        self._color_levels = np.linspace(0.0, 1.0, config.color_levels).tolist()

    def describe(self, name: str) -> str:
        """The valid range of one component, in words, for error messages and docs."""
        top = self.nvec[self.index[name]] - 1
        meaning = {
            "flag": "0 moves the pen, 1 paints",
            "end": f"a cell of the {self.config.grid_size}x{self.config.grid_size} grid, row-major",
            "control": f"a cell of the {self.config.grid_size}x{self.config.grid_size} grid, row-major",
            "size": f"an index into brush_sizes {self.config.brush_sizes}",
            "pressure": f"a level of {self.config.pressure_levels} over 0.1..1.0",
        }.get(name, f"a level of {self.config.color_levels} over 0..1")
        return f"0..{top} ({meaning})"

    def validate(self, action) -> np.ndarray:
        """The action as an int64 vector, or an ``InvalidActionError`` naming what is wrong."""
        try:
            values = np.asarray(action)
        except Exception as error:  # ragged lists and such: numpy's own error says what
            raise InvalidActionError(f"Action {action!r} is not an array: {error}") from error
        if values.shape == self.nvec.shape and values.dtype.kind in "iu":  # the common case, in plain Python
            listed = values.tolist()
            if min(listed) >= 0 and all(map(operator.lt, listed, self._sizes)):
                return values.astype(np.int64, copy=False)
        return self._checked(values)

    def _checked(self, values: np.ndarray) -> np.ndarray:
        """``validate``'s slow path: every check, with a message for the first that fails."""
        expected = f"{len(self.names)} integers, one per component {self.names}"
        if values.shape != self.nvec.shape:
            raise InvalidActionError(f"Action must have shape ({len(self.names)},): {expected}; got shape {values.shape}.")
        if values.dtype.kind not in "iuf":
            raise InvalidActionError(f"Action must be {expected}; got dtype {values.dtype}.")
        floats = values.astype(np.float64)
        bad = ~np.isfinite(floats) | (floats != np.floor(floats)) | (floats < 0) | (floats >= self.nvec)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidActionError(
                f"Invalid action component {self.names[i]!r} = {values[i].item()!r}: "
                f"valid values are {self.describe(self.names[i])}."
            )
        return values.astype(np.int64)

    def cell_center(self, cell: int) -> Point:
        """The canvas-pixel centre of a grid cell."""
        return self._centers[cell]

    def decode(self, action, pen: Point) -> Stroke:
        """The stroke an action draws from the current pen position ``pen``."""
        return self.stroke(self.validate(action), pen)

    def encode(self, stroke: Stroke) -> np.ndarray:
        """The action that ``decode`` turns into ``stroke`` (from the pen at ``stroke.start``): its inverse.

        A program records strokes, not actions; a policy that imitates a program (``spiral pretrain``
        on a ``spiral programs`` file) needs the actions back. A stroke this action space cannot
        make (a point off the grid's centres, a size, pressure or colour not among its levels, a
        pen-up move without a flag) is an ``InvalidActionError`` that names the field.
        """
        config, values = self.config, {}
        if "flag" in self.index:
            values["flag"] = PAINT if stroke.pen_down else MOVE
        elif not stroke.pen_down:
            raise InvalidActionError("A pen-up move needs the pen flag (use_flag), which this action space lacks.")
        for name in ("end", "control"):
            values[name] = self._cell(getattr(stroke, name), name)
        fixed_color = tuple(channel / 255.0 for channel in config.fixed_color)
        choices = {"size": (config.brush_sizes, config.use_size, config.fixed_size, stroke.size),
                   "pressure": (self._pressures, config.use_pressure, config.fixed_pressure, stroke.pressure)}
        choices |= {channel: (self._color_levels, config.use_color, fixed_color[i], stroke.color[i])
                    for i, channel in enumerate(("red", "green", "blue"))}
        for name, (levels, chosen, fixed, value) in choices.items():
            if not chosen:
                if value != fixed:
                    raise InvalidActionError(f"The stroke's {name} {value!r} is not this action space's fixed {fixed!r}.")
            elif value in levels:
                values[name] = list(levels).index(value)
            else:
                raise InvalidActionError(f"The stroke's {name} {value!r} is none of this action space's {list(levels)}.")
        return np.array([values[name] for name in self.names], dtype=np.int64)

    def _cell(self, point: Point, name: str) -> int:
        """The grid cell whose centre is ``point`` exactly."""
        grid, config = self.config.grid_size, self.config
        col, row = (round(point[0] * grid / config.width - 0.5), round(point[1] * grid / config.height - 0.5))
        if 0 <= col < grid and 0 <= row < grid and self._centers[row * grid + col] == tuple(point):
            return row * grid + col
        raise InvalidActionError(f"The stroke's {name} point {tuple(point)} is not the centre of a cell of the "
                                 f"{grid}x{grid} grid.")

    def stroke(self, action: np.ndarray, pen: Point) -> Stroke:
        """``decode`` for an action that ``validate`` has already returned."""
        values = dict(zip(self.names, action.tolist()))
        config = self.config
        if config.use_color:
            color = tuple(self._color_levels[values[channel]] for channel in ("red", "green", "blue"))
        else:
            color = tuple(channel / 255.0 for channel in config.fixed_color)
        return Stroke(
            start=pen,
            control=self.cell_center(values["control"]),
            end=self.cell_center(values["end"]),
            pen_down=values.get("flag", PAINT) == PAINT,
            size=config.brush_sizes[values["size"]] if config.use_size else config.fixed_size,
            pressure=self._pressures[values["pressure"]] if config.use_pressure else config.fixed_pressure,
            color=color,
        )
