"""The colour a stroke should have to bring the canvas nearest a target: an exact least-squares choice.

An opaque brush blends its colour ``c`` over the canvas with a coverage ``a`` (0..1 per pixel)
that does not depend on ``c``: ``new = (1 - a) old + a c``. The ``c`` of least squared error to
the target is ``sum(a (target - (1 - a) old)) / sum(a^2)`` per channel, exact for a fixed
footprint; the stroke takes the nearest of the action space's colour levels. The coverage is read
from the stroke drawn in white on a black canvas of its own: one render more per stroke.

Two users (issue #11): the greedy search gives each candidate stroke its best colour (a random
colour of 20^3 levels is almost always wrong, so candidates then differ only in where they paint),
and ``PaintEnv`` with ``PaintConfig.fit_color`` gives the agent's strokes theirs, so a colour agent
chooses where and how to paint and the target decides the colour.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from envs.actions import ActionCodec
from envs.config import PaintConfig
from envs.painter import Painter, agent_view
from envs.stroke import Point


class ColorFit:
    """Sets the colour components of actions to the best colour for their footprint on one canvas."""

    def __init__(self, config: PaintConfig, codec: ActionCodec, target: np.ndarray):
        if not config.use_color:
            raise ValueError("Fitting a stroke's colour chooses among the colour levels: it needs use_color = true.")
        self.codec, self.levels = codec, config.color_levels - 1
        self.channels = [codec.index[channel] for channel in ("red", "green", "blue")]
        self.scale = config.render_scale
        self.painter = Painter(config.width, config.height, config.brush, (0, 0, 0), config.render_scale,
                               config.points_per_stroke)
        self.blank = self.painter.surface.snapshot()
        self.reset(target)

    def reset(self, target: np.ndarray) -> None:
        """Fit to ``target`` (uint8, canvas-sized RGB) from a blank canvas, with a fresh brush, as a new episode."""
        self.painter.reset()
        self.target = np.asarray(target).astype(np.float32) / 255.0
        self.old = np.ones_like(self.target)  # the canvas the strokes are fitted on, in [0, 1]

    def update(self, canvas: np.ndarray) -> None:
        """Take the canvas (uint8, as the agent sees it) that the coming strokes are painted on."""
        self.old = canvas.astype(np.float32) / 255.0

    def fit(self, action: np.ndarray, start: Point) -> None:
        """Set ``action``'s colour components to the best colour for its footprint from ``start``."""
        stroke = replace(self.codec.stroke(action, start), color=(1.0, 1.0, 1.0))
        self.painter.draw(stroke)
        coverage = agent_view(self.painter.canvas(), self.scale)[..., :1].astype(np.float32) / 255.0
        self.painter.surface.restore(self.blank)
        weight = float((coverage**2).sum())
        if weight == 0:
            return  # paints nothing visible: any colour does
        color = (coverage * (self.target - (1 - coverage) * self.old)).sum((0, 1)) / weight
        action[self.channels] = np.clip(np.round(color * self.levels), 0, self.levels).astype(np.int64)

    def close(self) -> None:
        self.painter.close()
