"""How much the painting environment costs over libmypaint itself.

Runs a random policy in ``PaintEnv`` (64x64 canvas, grid 32, classic/dry_brush, 20-step
episodes, one process; the flag is uniform, so half of the actions are pen-up moves), then
draws the very same strokes with bare libmypaint calls, everything else precomputed: a fresh
brush and a cleared canvas per episode (what libmypaint needs to reproduce an episode), and
per painted stroke its radius, colour, the 51 ``stroke_to`` events and ``end_atomic``.
Prints both rates and their ratio. The issue's target: env time <= 1.15 x renderer time.

    python benchmarks/env_speed.py [--episodes 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import colorsys
import math
import time

import numpy as np

from envs import PaintEnv, Program
from envs.libmypaint import Brush, Surface
from envs.painter import DTIME, START_DTIME

CHUNK = 10  # episodes per timed chunk


def run_env(env: PaintEnv, actions: np.ndarray) -> tuple[float, list[Program]]:
    """Seconds to play every episode of ``actions`` (episodes x steps x components)."""
    programs = []
    start = time.perf_counter()
    for episode in actions:
        env.reset()
        for action in episode:
            env.step(action)
        programs.append(env.program)
    return time.perf_counter() - start, programs


def precompute(programs: list[Program]) -> list[list[tuple]]:
    """Per episode, per painted stroke: (log radius, h, s, v, pressure, [(x, y), ...])."""
    return [
        [
            (math.log(s.size), *colorsys.rgb_to_hsv(*s.color), s.pressure, s.points(p.points_per_stroke).tolist())
            for s in p.strokes if s.pen_down
        ]
        for p in programs
    ]


def run_renderer(episodes: list[list[tuple]], brush_name: str, background: tuple) -> float:
    """Seconds libmypaint alone needs to draw the same strokes, with nothing else to do."""
    surface, lib = Surface(64, 64, background), Brush(brush_name)._lib
    set_base = lib.mypaint_brush_set_base_value
    radius, hue, sat, val = (lib.mypaint_brush_setting_from_cname(name) for name in
                             (b"radius_logarithmic", b"color_h", b"color_s", b"color_v"))
    start = time.perf_counter()
    for strokes in episodes:
        surface.clear(background)
        brush = Brush(brush_name)
        handle, stroke_to = brush.handle, lib.mypaint_brush_stroke_to
        for log_radius, h, s, v, pressure, points in strokes:
            set_base(handle, radius, log_radius)
            set_base(handle, hue, h)
            set_base(handle, sat, s)
            set_base(handle, val, v)
            lib.mypaint_brush_reset(handle)
            lib.mypaint_brush_new_stroke(handle)
            surface.begin_atomic()
            x, y = points[0]
            stroke_to(handle, surface.handle, x, y, 0.0, 0.0, 0.0, START_DTIME)
            for x, y in points:
                stroke_to(handle, surface.handle, x, y, pressure, 0.0, 0.0, DTIME)
            surface.end_atomic()
        brush.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5, help="best of this many timings of each")
    args = parser.parse_args()

    env = PaintEnv(canvas_size=64, grid_size=32, brush="classic/dry_brush", episode_length=20)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = np.array([[env.action_space.sample() for _ in range(20)] for _ in range(args.episodes)])
    _, programs = run_env(env, actions)
    strokes = precompute(programs)
    # This machine's speed drifts from second to second. Both sides run the same short chunks
    # of episodes, interleaved, and each chunk counts with its best time of ``repeats``.
    env_seconds = renderer_seconds = 0.0
    for chunk in range(0, args.episodes, CHUNK):
        env_seconds += min(run_env(env, actions[chunk:chunk + CHUNK])[0] for _ in range(args.repeats))
        renderer_seconds += min(
            run_renderer(strokes[chunk:chunk + CHUNK], env.config.brush, env.config.background)
            for _ in range(args.repeats)
        )

    steps = actions.shape[0] * actions.shape[1]
    painted = sum(len(episode) for episode in strokes)
    print(f"{steps} steps ({painted} painted, {steps - painted} moves), best of {args.repeats} per chunk of {CHUNK} episodes")
    print(f"env (PaintEnv.step + reset):     {steps / env_seconds:8.0f} steps/s  {env_seconds:.3f} s")
    print(f"renderer only (bare libmypaint): {steps / renderer_seconds:8.0f} steps/s  {renderer_seconds:.3f} s")
    print(f"ratio env / renderer time: {env_seconds / renderer_seconds:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
