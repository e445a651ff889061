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

Two things make the candidates better than random (``SearchSettings``, the teacher's defaults):
``guided``, the fraction of candidates whose end point lies where the target has ink the canvas
lacks (``_InkProposal``), and ``refine``, rounds of hill climbing on the best one (its points
moved one cell, its radius one size). On MNIST digits they take the search from MSE 0.051 to
0.020 at the same cost (docs/RESULTS.md).

``label_episode`` runs the same choice in the states of someone else's episode: what the search
would have done there, the labels of DAgger's corrections (``spiral.demonstrations``).

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

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from envs import ActionCodec, PaintConfig, Painter, mse
from envs.actions import MOVE, PAINT
from envs.color_fit import ColorFit
from envs.painter import agent_view
from envs.stroke import Point

JUMP_FACTOR = 2.0  # a pen-up move is worth it when the stroke it leads to gains this much more


@dataclass(frozen=True)
class SearchSettings:
    """How the search that makes demonstrations runs (``spiral.demonstrations``): its defaults are the
    teacher that pretraining imitates, and ``spiral eval`` scores it beside the agent."""

    bank: int = 30  # paint candidates per step
    jumps: int = 7  # pen-up-and-paint-from-there candidates per step (with a pen flag)
    jump_factor: float = JUMP_FACTOR
    guided: float = 1.0  # the fraction of candidates aimed at missing ink
    refine: int = 4  # hill-climbing rounds on the best candidate
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name, low in (("bank", 1), ("jumps", 0), ("refine", 0), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name} must be an integer >= {low}, got {value!r}")
        factor = self.jump_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor < 0:
            problems.append(f"jump_factor must be a finite number >= 0, got {factor!r}")
        guided = self.guided
        if isinstance(guided, bool) or not isinstance(guided, (int, float)) or not 0 <= guided <= 1:
            problems.append(f"guided must be a fraction in [0, 1], got {guided!r}")
        if problems:
            raise ValueError("Invalid search settings: " + "; ".join(problems) + ".")

    def keywords(self) -> dict[str, float]:
        """The keyword arguments of ``greedy_search`` and ``label_episode`` that these settings stand for."""
        return {"bank": self.bank, "jumps": self.jumps, "jump_factor": self.jump_factor, "guided": self.guided,
                "refine": self.refine}


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
                  jumps: int = 0, jump_factor: float = JUMP_FACTOR, pen_up: bool = True, guided: float = 0.0,
                  refine: int = 0, replayable: bool = True) -> SearchResult:
    """Paint ``target`` ((height, width, 3) uint8) in ``config.episode_length`` greedy steps.

    Args:
        bank: paint candidates per step.
        rng: the source of every random choice (``np.random.default_rng(seed)``).
        jumps: "move the pen, then paint from there" candidates per step (pen flag only).
        jump_factor: how much more than the best connected stroke a jump's stroke must gain.
        pen_up: use the pen flag's moves (jumps and "lift and stay") where the config has a flag.
        guided: the fraction of candidates whose points are drawn where ink is missing
            (``_InkProposal``) rather than uniformly over the grid.
        refine: rounds of hill climbing on the best candidate: each round tries its end and
            control points one cell away and its neighbouring brush sizes, and keeps the best.
        replayable: ``True``: the result replays exactly through ``PaintEnv``. ``False``: the
            historic baseline: one brush draws candidates and chosen strokes alike, and a step
            where nothing helps is skipped (its action is ``None``).
    """
    search = _Search(config, target, rng, bank, jumps, jump_factor, pen_up, guided, refine, replayable)
    try:
        actions: list[list[int] | None] = []
        for step in range(config.episode_length):
            chosen = search.choose(step)
            if chosen is None:
                actions.append(None)  # the baseline's skipped step: the pen stays where it is
                continue
            search.draw(chosen)
            actions.append(chosen.tolist())
        return SearchResult(actions, search.canvas, search.error)
    finally:
        search.close()


def label_episode(config: PaintConfig, target: np.ndarray, actions: np.ndarray, rng: np.random.Generator, *,
                  bank: int, jumps: int = 0, jump_factor: float = JUMP_FACTOR, guided: float = 0.0,
                  refine: int = 0, tolerance: float = 0.0) -> tuple[np.ndarray, float]:
    """What the search would do in each state of an episode someone else painted (DAgger's expert labels).

    ``actions`` (episode_length, components) are drawn in order, as ``PaintEnv`` draws them; before
    each, the search chooses its own action from that canvas and pen. Returns the labels, one
    action per step, and the MSE of the canvas ``actions`` painted. A pen-up move the search
    chose pays off only if the painter followed it: the stroke it planned from there is tried at
    the next step only then.

    ``tolerance`` > 0 keeps the painter's own stroke as the label where it gains at least ``1 -
    tolerance`` of what the search's stroke gains (both painting strokes; the colour refitted as
    the search's are). A search picks among many strokes of nearly equal worth at random (another
    seed lays a photo's first wash along another path for the same error), so its labels are
    noise where the painter already does well; kept, they sharpen the painter's own choices, and
    the search corrects only where it does clearly better.
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be a fraction in [0, 1), got {tolerance!r}.")
    search = _Search(config, target, rng, bank, jumps, jump_factor, True, guided, refine, True)
    try:
        labels = []
        for step, action in enumerate(np.asarray(actions, np.int64)):
            label = search.choose(step)
            labels.append(search.own_if_close(action, label, tolerance) if tolerance > 0 else label)
            search.draw(action)
        return np.stack(labels), search.error
    finally:
        search.close()


class _Search:
    """A greedy search under way: the canvas painted so far, the pen, and the stroke a pen-up move planned."""

    def __init__(self, config: PaintConfig, target: np.ndarray, rng: np.random.Generator, bank: int, jumps: int,
                 jump_factor: float, pen_up: bool, guided: float, refine: int, replayable: bool):
        if bank < 1:
            raise ValueError(f"The search needs at least one candidate stroke a step, got bank={bank}.")
        if not 0.0 <= guided <= 1.0:
            raise ValueError(f"guided must be a fraction in [0, 1], got {guided!r}.")
        self.config, self.rng, self.target = config, rng, np.asarray(target)
        self.bank, self.jumps, self.jump_factor, self.guided, self.refine = bank, jumps, jump_factor, guided, refine
        self.replayable = replayable
        self.codec = ActionCodec(config)
        self.flag = self.codec.index.get("flag")
        self.moves = pen_up and self.flag is not None
        self.proposal = _InkProposal(config, self.codec, self.target) if guided > 0 else None
        self.colours = ColorFit(config, self.codec, self.target) if config.use_color else None
        self.canvases = _Canvas(config, replayable)
        self.canvas = self.canvases.view(self.canvases.painter)
        self.error, self.pen = float(mse(self.canvas, self.target)), (config.width / 2, config.height / 2)
        self.planned: np.ndarray | None = None  # the stroke a pen-up move went to the start of
        self.choice: np.ndarray | None = None  # the last action ``choose`` returned
        self.choice_error = np.inf  # ... the error after it where it paints from the pen
        self.saved = None  # ... and the canvas it was chosen on (a snapshot)
        self.plan: np.ndarray | None = None  # ... and the stroke it planned, if it was a pen-up move

    def close(self) -> None:
        self.canvases.close()
        if self.colours is not None:
            self.colours.close()

    def choose(self, step: int) -> np.ndarray | None:
        """The action for ``step`` from the current canvas (not drawn); ``None``: the baseline skips the step."""
        config, codec, rng, flag, proposal = self.config, self.codec, self.rng, self.flag, self.proposal
        painter, scratch = self.canvases.painter, self.canvases.scratch
        self.saved = painter.surface.snapshot()
        if scratch is not painter:
            scratch.surface.restore(self.saved)
        if proposal is not None:
            proposal.update(self.canvas)
        if self.colours is not None:
            self.colours.update(self.canvas)
        pen = self.pen

        tried = self._tried

        def random_action() -> np.ndarray:
            action = rng.integers(0, codec.nvec)
            if flag is not None:
                action[flag] = PAINT
            return action

        best, best_error = None, np.inf
        for _ in range(self.bank):
            action = random_action()
            if proposal is not None and rng.random() < self.guided:
                proposal.place(action, pen, rng)
            candidate_error = tried(action, pen)
            if candidate_error < best_error:
                best, best_error = action, candidate_error
        if self.planned is not None:
            candidate_error = tried(self.planned, pen)
            if candidate_error < best_error:
                best, best_error = self.planned, candidate_error
        best, best_error = hill_climb(codec, best, best_error, lambda action: tried(action, pen), self.refine)
        jump, jump_error = None, np.inf
        if self.moves and step + 1 < config.episode_length:  # a move pays off only with a step left to paint
            for _ in range(self.jumps):
                action = random_action()
                if proposal is not None and rng.random() < self.guided:
                    start = proposal.start(rng)
                    proposal.place(action, codec.cell_center(start), rng)
                else:
                    start = int(rng.integers(config.grid_size**2))
                candidate_error = tried(action, codec.cell_center(start))
                if candidate_error < jump_error:
                    jump, jump_error = (start, action), candidate_error
            if jump is not None:
                start = jump[0]
                action, jump_error = hill_climb(codec, jump[1], jump_error,
                                                lambda action: tried(action, codec.cell_center(start)), self.refine)
                jump = (start, action)
        gain, jump_gain = self.error - best_error, self.error - jump_error
        self.plan = None
        if jump is not None and jump_gain > 0 and jump_gain > self.jump_factor * max(gain, 0.0):
            start, self.plan = jump
            chosen = _move(codec, start)
        elif gain > 0:
            chosen = best
        elif self.moves:
            chosen = _move(codec, _cell(config, pen))  # lift and stay
        elif self.replayable:
            chosen = best  # without a flag a step must paint: the least harmful stroke
        else:
            chosen = None
        self.choice, self.choice_error = chosen, best_error if chosen is best else np.inf
        return chosen

    def _tried(self, action: np.ndarray, start: Point) -> float:
        """The error after ``action`` from ``start`` on the canvas ``choose`` chose on (not drawn), its colour
        fitted in place where the search fits colours."""
        scratch = self.canvases.scratch
        if self.colours is not None:
            self.colours.fit(action, start)
        scratch.draw(self.codec.stroke(action, start))
        result = float(mse(self.canvases.view(scratch), self.target))
        scratch.surface.restore(self.saved)
        return result

    def own_if_close(self, own: np.ndarray, label: np.ndarray, tolerance: float) -> np.ndarray:
        """After ``choose`` returned ``label``: ``own`` (colour refitted) instead if both paint from the pen and
        ``own`` gains at least ``1 - tolerance`` of what ``label`` gains (``label_episode``)."""
        flag = self.flag
        if flag is not None and (own[flag] != PAINT or label[flag] != PAINT):
            return label
        gain = self.error - self.choice_error
        own = np.array(own, np.int64)
        own_gain = self.error - self._tried(own, self.pen)
        return own if gain > 0 and own_gain >= (1 - tolerance) * gain else label

    def draw(self, action: np.ndarray) -> None:
        """Paint ``action`` from the pen; a plan made by ``choose`` holds if ``action`` is what it chose."""
        self.planned = self.plan if self.choice is not None and np.array_equal(action, self.choice) else None
        stroke = self.codec.stroke(action, self.pen)
        self.canvases.painter.draw(stroke)
        self.canvas, self.pen = self.canvases.view(self.canvases.painter), stroke.end
        self.error = float(mse(self.canvas, self.target))


class _InkProposal:
    """Where a stroke is worth trying: grid cells weighted by the ink the target has and the canvas lacks.

    ``place`` puts a candidate's end in such a cell, preferring cells near the stroke's start
    (a long stroke across the background paints where no ink belongs), and its control point
    near the middle of the segment; ``start`` draws the cell a pen-up move goes to. Uniform
    random candidates spend most of their renders on strokes that cannot help: on a digit,
    four fifths of the grid is background.
    """

    REACH = 0.25  # the scale of the preference for ends near the start, as a fraction of the grid
    BEND = 0.15  # the scale of the control point's spread around the segment's middle

    def __init__(self, config: PaintConfig, codec: ActionCodec, target: np.ndarray):
        self.codec, self.grid = codec, config.grid_size
        rows = np.minimum(np.arange(config.height) * self.grid // config.height, self.grid - 1)
        cols = np.minimum(np.arange(config.width) * self.grid // config.width, self.grid - 1)
        self.cell_of_pixel = (rows[:, None] * self.grid + cols[None, :]).ravel()
        self.target = target.astype(np.float32)
        self.ink = None if config.use_color else np.asarray(config.fixed_color, np.float32)
        self.target_to_ink = None if self.ink is None else np.abs(self.target - self.ink).mean(-1)
        centers = np.array([codec.cell_center(cell) for cell in range(self.grid**2)], np.float64)
        self.centers = centers
        self.cell_size = np.array([config.width / self.grid, config.height / self.grid])
        self.missing = np.ones(self.grid**2) / self.grid**2

    def update(self, canvas: np.ndarray) -> None:
        """Recompute the missing ink after the canvas changed."""
        canvas = canvas.astype(np.float32)
        if self.ink is None:  # a colour brush can mend any pixel: the squared error is what is missing
            lack = ((self.target - canvas) ** 2).sum(-1).ravel()
        else:  # a fixed colour can only add ink: how much nearer to it the target is than the canvas
            lack = np.clip(np.abs(canvas - self.ink).mean(-1) - self.target_to_ink, 0, None).ravel()
        mass = np.bincount(self.cell_of_pixel, weights=lack, minlength=self.grid**2)
        total = mass.sum()
        self.missing = mass / total if total > 0 else np.full(self.grid**2, 1.0 / self.grid**2)

    def start(self, rng: np.random.Generator) -> int:
        return int(rng.choice(self.grid**2, p=self.missing))

    def place(self, action: np.ndarray, start: Point, rng: np.random.Generator) -> None:
        """Set ``action``'s end (and control) cells from the missing ink around ``start``."""
        index = self.codec.index
        offsets = (self.centers - np.asarray(start)) / (self.cell_size * self.grid)
        near = self.missing * np.exp(-0.5 * (offsets**2).sum(-1) / self.REACH**2)
        weights = near / near.sum() if near.sum() > 0 else self.missing
        end = int(rng.choice(self.grid**2, p=weights))
        action[index["end"]] = end
        middle = (np.asarray(start) + self.centers[end]) / 2
        spread = self.BEND * self.grid * self.cell_size + np.abs(self.centers[end] - np.asarray(start)) / 4
        row, col = np.clip(np.round(rng.normal((middle[::-1]), spread[::-1]) / self.cell_size[::-1] - 0.5),
                           0, self.grid - 1).astype(int)
        action[index["control"]] = row * self.grid + col


def hill_climb(codec: ActionCodec, action: np.ndarray | None, error: float, score: Callable[[np.ndarray], float],
               rounds: int) -> tuple[np.ndarray | None, float]:
    """Improve ``action`` (scored by ``score``, ``error`` its score now) by moving its end or control one cell, or
    changing its size by one, ``rounds`` times at most; each round keeps the best neighbour and stops when none is
    better. The search refines its best candidate with it, and an agent its chosen stroke (``Agent.paint_all``)."""
    if action is None:
        return action, error
    grid = codec.config.grid_size
    for _ in range(rounds):
        neighbours = []
        for name in ("end", "control"):
            row, col = divmod(int(action[codec.index[name]]), grid)
            for d_row in (-1, 0, 1):
                for d_col in (-1, 0, 1):
                    if (d_row or d_col) and 0 <= row + d_row < grid and 0 <= col + d_col < grid:
                        neighbour = action.copy()
                        neighbour[codec.index[name]] = (row + d_row) * grid + col + d_col
                        neighbours.append(neighbour)
        if "size" in codec.index:
            for step in (-1, 1):
                size = int(action[codec.index["size"]]) + step
                if 0 <= size < codec.nvec[codec.index["size"]]:
                    neighbour = action.copy()
                    neighbour[codec.index["size"]] = size
                    neighbours.append(neighbour)
        scored = [(score(neighbour), i) for i, neighbour in enumerate(neighbours)]
        best_score, best_index = min(scored) if scored else (np.inf, -1)
        if best_score >= error:
            break
        action, error = neighbours[best_index], best_score
    return action, error


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
