"""Greedy stroke search: paint a target one step at a time, each step the best of random candidates.

One home for the search that serves as an evaluation baseline (``spiral.evaluation.search_score``)
and as the teacher of behaviour cloning (``spiral.demonstrations``). It works in the agent's
action space, so what it chooses are actions a policy can imitate, and it renders every
candidate with the real brush on the current canvas, taking it back with
``Surface.snapshot`` / ``restore``.

At each of ``episode_length`` steps the candidates are:

- ``bank`` random actions with the pen flag set to paint, each a stroke from the current pen;
- with a pen flag (``PaintConfig.use_flag``), pen-up options: ``jumps`` random strokes from a
  random grid cell; a pen-up move to that cell now, with the stroke planned for the next step,
  is taken when the stroke improves the canvas by more than ``jump_factor`` times what the best
  connected stroke does (a move costs a step); and "lift and stay", a pen-up move to the pen's
  own cell, when no candidate improves the canvas at all.

Without a pen flag a step must paint: the least harmful candidate when none helps (a policy
without a flag cannot do otherwise). The evaluation baseline instead skips such a step
(``replayable=False``): it measures what brute force reaches, not a program.

Everything random comes from the ``rng`` passed in, so a search is reproducible from a seed; the
paint candidates are drawn first and the jump candidates after them, so a search without jumps
draws the same numbers as the historic baseline.

With ``replayable=True`` (the default) the chosen strokes are drawn on a canvas of their own,
with a brush that draws nothing else, exactly as ``PaintEnv`` draws them: the returned canvas
and MSE are what replaying the actions through ``PaintEnv`` gives, to the last bit, even for
brushes with random jitter (whose dabs depend on what the brush drew before).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs import ActionCodec, PaintConfig, Painter, mse
from envs.actions import MOVE, PAINT
from envs.painter import agent_view
from envs.stroke import Point, Stroke

JUMP_FACTOR = 2.0  # a pen-up move is worth it when the stroke it leads to gains this much more


@dataclass
class SearchResult:
    """What a search painted: one action per step (``None`` where the baseline skipped a step),
    the final canvas as the agent sees it, and its mean squared error to the target."""

    actions: list[list[int] | None]
    canvas: np.ndarray
    mse: float


class _Canvas:
    """The canvas the chosen strokes are drawn on, and the scratch canvas candidates are tried on."""

    def __init__(self, config: PaintConfig, replayable: bool):
        self.config = config

        def painter() -> Painter:
            return Painter(config.width, config.height, config.brush, config.background, config.render_scale,
                           config.points_per_stroke)

        self.painter = painter()
        self.scratch = painter() if replayable else self.painter

    def view(self, painter: Painter) -> np.ndarray:
        """The canvas at the agent's resolution, averaged over ``render_scale`` blocks as ``PaintEnv`` does."""
        return agent_view(painter.canvas(), self.config.render_scale)

    def close(self) -> None:
        self.painter.close()
        if self.scratch is not self.painter:
            self.scratch.close()


def greedy_search(config: PaintConfig, target: np.ndarray, bank: int, rng: np.random.Generator, *,
                  jumps: int = 0, jump_factor: float = JUMP_FACTOR, pen_up: bool = True,
                  replayable: bool = True) -> SearchResult:
    """Paint ``target`` ((height, width, 3) uint8) in ``config.episode_length`` greedy steps.

    Args:
        bank: random paint candidates per step.
        rng: the source of every random choice (``np.random.default_rng(seed)``).
        jumps: random "move the pen, then paint from there" candidates per step (pen flag only).
        jump_factor: how much more than the best connected stroke a jump's stroke must gain.
        pen_up: use the pen flag's moves (jumps and "lift and stay") where the config has a flag.
        replayable: ``True``: the result replays exactly through ``PaintEnv``. ``False``: the
            historic baseline: one brush draws candidates and chosen strokes alike, and a step
            where nothing helps is skipped (its action is ``None``).
    """
    if bank < 1:
        raise ValueError(f"The search needs at least one candidate stroke a step, got bank={bank}.")
    codec = ActionCodec(config)
    flag = codec.index.get("flag")
    moves = pen_up and flag is not None
    cells = config.grid_size**2
    target = np.asarray(target)
    canvas_pair = _Canvas(config, replayable)
    painter, scratch = canvas_pair.painter, canvas_pair.scratch
    try:
        canvas = canvas_pair.view(painter)
        error, pen = float(mse(canvas, target)), (config.width / 2, config.height / 2)
        actions: list[list[int] | None] = []
        planned: np.ndarray | None = None  # the stroke a pen-up move went to the start of
        for step in range(config.episode_length):
            saved = painter.surface.snapshot()
            if scratch is not painter:
                scratch.surface.restore(saved)

            def tried(stroke: Stroke) -> float:
                scratch.draw(stroke)
                result = float(mse(canvas_pair.view(scratch), target))
                scratch.surface.restore(saved)
                return result

            best, best_error = None, np.inf
            for _ in range(bank):
                action = rng.integers(0, codec.nvec)
                if flag is not None:
                    action[flag] = PAINT
                candidate_error = tried(codec.stroke(action, pen))
                if candidate_error < best_error:
                    best, best_error = action, candidate_error
            if planned is not None:
                candidate_error = tried(codec.stroke(planned, pen))
                if candidate_error < best_error:
                    best, best_error = planned, candidate_error
                planned = None
            jump, jump_error = None, np.inf
            if moves and step + 1 < config.episode_length:  # a move pays off only with a step left to paint
                for _ in range(jumps):
                    action = rng.integers(0, codec.nvec)
                    action[flag] = PAINT
                    start = int(rng.integers(cells))
                    candidate_error = tried(codec.stroke(action, codec.cell_center(start)))
                    if candidate_error < jump_error:
                        jump, jump_error = (start, action), candidate_error
            gain, jump_gain = error - best_error, error - jump_error
            if jump is not None and jump_gain > 0 and jump_gain > jump_factor * max(gain, 0.0):
                start, planned = jump
                chosen = _move(codec, start)
            elif gain > 0:
                chosen = best
            elif moves:
                chosen = _move(codec, _cell(config, pen))  # lift and stay
            elif replayable:
                chosen = best  # without a flag a step must paint: the least harmful stroke
            else:
                actions.append(None)  # the baseline's skipped step: the pen stays where it is
                continue
            stroke = codec.stroke(chosen, pen)
            painter.draw(stroke)
            canvas, pen = canvas_pair.view(painter), stroke.end
            error = float(mse(canvas, target))
            actions.append(chosen.tolist())
        return SearchResult(actions, canvas, error)
    finally:
        canvas_pair.close()


def _move(codec: ActionCodec, cell: int) -> np.ndarray:
    """A pen-up move to ``cell``: the control point on the end, every other component 0 (what a policy
    imitating it learns as one fixed choice)."""
    action = np.zeros(len(codec.names), np.int64)
    action[codec.index["flag"]] = MOVE
    action[codec.index["end"]] = action[codec.index["control"]] = cell
    return action


def _cell(config: PaintConfig, point: Point) -> int:
    """The grid cell (row-major) that holds a canvas point."""
    grid = config.grid_size
    col = min(max(int(point[0] * grid / config.width), 0), grid - 1)
    row = min(max(int(point[1] * grid / config.height), 0), grid - 1)
    return row * grid + col
