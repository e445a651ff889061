"""How well an agent reconstructs held-out images, next to the floors and ceilings of the task.

Every figure is the mean squared error per pixel (images in [0, 1]) between target and final
canvas, with a 95% confidence interval over the images:

- the agent, with sampled and with greedy actions, and where asked, choosing each stroke among
  its own proposals and hill-climbing it (``Agent.paint_all(proposals=K, refine=R)``);
- a blank canvas (what painting nothing scores);
- a random policy (what painting without looking scores);
- a greedy search: each stroke is the best of a bank of random strokes, judged by rendering it
  with the real brush, with the same stroke budget (what brute force reaches, and at what cost);
- the teacher: the search that makes pretraining's demonstrations (``SearchSettings()``: strokes
  aimed at missing ink, hill-climbed, pen-up moves), in the agent's own action space: what the
  agent imitates, so the gap between the two is what imitation has left to learn.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from envs import PaintConfig, PaintEnv, mse
from spiral.agent import Agent, stroke_choice_label, temperature_label
from spiral.search import SearchSettings, greedy_search


@dataclass(frozen=True)
class Score:
    """Mean squared error over images, its 95% confidence half-width, and the time per image."""

    name: str
    mean: float
    half_width: float
    seconds_per_image: float

    def row(self) -> str:
        """One row of ``TABLE_HEADER``'s Markdown table."""
        return f"| {self.name} | {self.mean:.4f} ± {self.half_width:.4f} | {self.seconds_per_image:.3f} |"


TABLE_HEADER = "| painter | MSE per pixel (95% interval) | seconds per image |\n|---|---|---|"


def score(name: str, errors: list[float], seconds: float) -> Score:
    values = np.asarray(errors, dtype=np.float64)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return Score(name, float(values.mean()), float(half_width), seconds / len(values))


def _timed(name: str, targets: np.ndarray, paint_one) -> Score:
    start = time.perf_counter()
    errors = [float(mse(paint_one(i, target), target)) for i, target in enumerate(targets)]
    return score(name, errors, time.perf_counter() - start)


def agent_score(agent: Agent, targets: np.ndarray, greedy: bool, temperature: float | None = None,
                proposals: int = 1, refine: int = 0, first_stroke_temperature: float | None = None) -> Score:
    """The agent's paintings of ``targets`` (image ``i`` seeded ``i``): greedy, or sampled at ``temperature`` and
    ``first_stroke_temperature`` (by default the agent's own: ``Agent.sampling_temperatures``), each stroke the best
    of ``proposals``, hill-climbed ``refine`` rounds. Painted together (``Agent.paint_all``): the time per image is
    a share of the batch's."""
    first, later = agent.sampling_temperatures(temperature, first_stroke_temperature)
    label = temperature_label((first, later))
    name = "agent (greedy" if greedy else "agent (sampled" + (f" at {label}" if label else "")
    name += stroke_choice_label(proposals, refine) + ")"
    start = time.perf_counter()
    episodes = agent.paint_all(targets, greedy=greedy, temperature=later, proposals=proposals, refine=refine,
                               first_stroke_temperature=first)
    errors = [float(mse(episode.canvas, target)) for episode, target in zip(episodes, targets)]
    return score(name, errors, time.perf_counter() - start)


def blank_score(config: PaintConfig, targets: np.ndarray) -> Score:
    blank = PaintEnv(dataclasses.replace(config, fit_color=False)).reset(seed=0)[0]["canvas"]  # no target here
    return _timed("blank canvas", targets, lambda i, target: blank)


def random_score(config: PaintConfig, targets: np.ndarray) -> Score:
    def paint(i: int, target: np.ndarray) -> np.ndarray:
        env = PaintEnv(config, target_source=target[None])
        observation, _ = env.reset(seed=i)
        env.action_space.seed(i)
        for _ in range(config.episode_length):
            observation = env.step(env.action_space.sample())[0]
        return observation["canvas"]

    return _timed("random policy", targets, paint)


def search_score(config: PaintConfig, targets: np.ndarray, bank: int, seed: int = 0) -> Score:
    """Greedy search: each step paints the best of ``bank`` random strokes, or nothing if none helps.

    Every candidate is rendered with the real brush on the current canvas and taken back
    (``Surface.snapshot`` / ``restore``); ``episode_length`` steps, like the agent. The search is
    ``spiral.search.greedy_search`` as this baseline has always run it: at the canvas resolution,
    one brush for candidates and chosen strokes, no pen-up moves, one random stream over all targets.
    """
    rng = np.random.default_rng(seed)
    flat = dataclasses.replace(config, render_scale=1)

    def paint(i: int, target: np.ndarray) -> np.ndarray:
        return greedy_search(flat, target, bank, rng, pen_up=False, replayable=False).canvas

    return _timed(f"greedy search ({bank} strokes)", targets, paint)


def teacher_score(config: PaintConfig, targets: np.ndarray, settings: SearchSettings = SearchSettings()) -> Score:
    """The demonstrations' search in the agent's action space; image ``i`` draws from ``[settings.seed, i]``."""
    def paint(i: int, target: np.ndarray) -> np.ndarray:
        return greedy_search(config, target, rng=np.random.default_rng([settings.seed, i]),
                             **settings.keywords()).canvas

    return _timed(f"teacher search ({settings.bank} aimed strokes, {settings.refine} climbs)", targets, paint)


def evaluate(agent: Agent, targets: np.ndarray, bank: int = 200, temperature: float | None = None,
             proposals: int = 1, refine: int = 0, first_stroke_temperature: float | None = None) -> list[Score]:
    """The agent (sampled at ``temperature`` and ``first_stroke_temperature``, by default its own, and greedy;
    with ``proposals`` > 1 or ``refine`` also greedy with each stroke the best of that many proposals,
    hill-climbed that many rounds) and the baselines, on the same targets; ``bank=0`` skips the searches.

    The search costs most, and it depends only on the targets and the environment settings, so
    agents trained with one preset can share one measurement of it.
    """
    config = agent.paint_config
    scores = [agent_score(agent, targets, greedy=False, temperature=temperature,
                          first_stroke_temperature=first_stroke_temperature),
              agent_score(agent, targets, greedy=True)]
    if proposals > 1 or refine:
        scores.append(agent_score(agent, targets, greedy=True, temperature=temperature, proposals=proposals,
                                  refine=refine, first_stroke_temperature=first_stroke_temperature))
    scores += [blank_score(config, targets), random_score(config, targets)]
    return scores + [search_score(config, targets, bank), teacher_score(config, targets)] if bank else scores
