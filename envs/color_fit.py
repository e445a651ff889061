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

Each of those fits is greedy: a stroke's colour is chosen for its whole footprint, including the
parts that later strokes paint over (the first wide stroke lays a background for the whole canvas,
then faces and objects cover most of it). ``refit_colors`` re-chooses every stroke's colour at once
for the finished painting, where the canvas is linear in the colours:
``canvas = background * prod_k (1 - a_k) + sum_k c_k a_k prod_{j > k} (1 - a_j)``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from envs.actions import ActionCodec
from envs.config import PaintConfig
from envs.painter import Painter, agent_view
from envs.program import Program
from envs.stroke import Point, Stroke

REFIT_SWEEPS = 50  # coordinate-descent sweeps at most; a painting of 20 strokes settles in a few


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
        coverage = _coverage(self.painter, self.blank, self.codec.stroke(action, start), self.scale)
        coverage = coverage[..., None].astype(np.float32) / 255.0
        weight = float((coverage**2).sum())
        if weight == 0:
            return  # paints nothing visible: any colour does
        color = (coverage * (self.target - (1 - coverage) * self.old)).sum((0, 1)) / weight
        action[self.channels] = np.clip(np.round(color * self.levels), 0, self.levels).astype(np.int64)

    def close(self) -> None:
        self.painter.close()


def refit_colors(program: Program, target: np.ndarray, config: PaintConfig) -> Program:
    """``program`` with each painting stroke's colour re-chosen, jointly, to bring its final canvas nearest ``target``.

    The canvas is linear in the strokes' colours (module docstring), so the squared error is a
    quadratic in them. It is lowered by coordinate descent over the action space's colour levels,
    from the colours the strokes have: each stroke in turn takes the level nearest the best colour
    given the others' (for a one-dimensional quadratic, the best level), until no stroke changes.
    Every change lowers the error the model predicts, so the result is never worse than the
    program by that model, which is exact for an opaque brush painted at the canvas's own size (a
    ``render_scale`` above 1 block-averages the canvas, which it approximates). The strokes keep
    their geometry; only colours change, each still a level of the action space (``config``), so the
    program replays and encodes as any other. One render per stroke, as ``ColorFit``'s.
    """
    if not config.use_color:
        raise ValueError("Refitting colours chooses among the colour levels: it needs use_color = true.")
    codec = ActionCodec(config)
    painting = [i for i, stroke in enumerate(program.strokes) if stroke.pen_down]
    if not painting:
        return program
    coverages = _coverages(program, painting, config)  # (K, H, W)
    visible, uncovered = np.empty_like(coverages), np.ones_like(coverages[0])
    for k in range(len(painting) - 1, -1, -1):  # what of stroke k the later strokes leave showing
        visible[k] = coverages[k] * uncovered
        uncovered *= 1 - coverages[k]
    weights = visible.reshape(len(painting), -1)
    background = np.asarray(program.background, np.float64) / 255.0
    residual = np.asarray(target, np.float64).reshape(-1, 3) / 255.0 - uncovered.reshape(-1, 1) * background
    gram, projection = weights @ weights.T, weights @ residual  # (K, K), (K, 3)
    steps = config.color_levels - 1
    levels = np.array([[round(channel * steps) for channel in program.strokes[i].color] for i in painting], np.float64)
    for _ in range(REFIT_SWEEPS):
        changed = False
        for k in np.flatnonzero(np.diag(gram) > 0):
            others = gram[k] @ levels / steps - gram[k, k] * levels[k] / steps
            best = np.clip(np.round((projection[k] - others) / gram[k, k] * steps), 0, steps)
            if (best != levels[k]).any():
                levels[k], changed = best, True
        if not changed:
            break
    channels = [codec.index[channel] for channel in ("red", "green", "blue")]
    strokes = list(program.strokes)
    for k, i in enumerate(painting):
        action = codec.encode(strokes[i])
        action[channels] = levels[k].astype(np.int64)
        strokes[i] = codec.stroke(action, strokes[i].start)
    return replace(program, strokes=strokes)


def _coverages(program: Program, painting: list[int], config: PaintConfig) -> np.ndarray:
    """Each painting stroke's coverage (0..1, canvas-sized), as ``ColorFit`` reads it."""
    painter = Painter(config.width, config.height, program.brush, (0, 0, 0), config.render_scale,
                      program.points_per_stroke)
    try:
        blank = painter.surface.snapshot()
        return np.stack([_coverage(painter, blank, program.strokes[i], config.render_scale)
                         for i in painting]).astype(np.float64) / 255.0
    finally:
        painter.close()


def _coverage(painter: Painter, blank: list[np.ndarray], stroke: Stroke, scale: int) -> np.ndarray:
    """How much of each pixel ``stroke`` covers, uint8 (H, W) at the canvas's size: the stroke drawn alone in white
    on ``painter``'s black canvas, which is then restored to ``blank`` (its snapshot)."""
    painter.draw(replace(stroke, color=(1.0, 1.0, 1.0)))
    coverage = agent_view(painter.canvas(), scale)[..., 0]
    painter.surface.restore(blank)
    return coverage
