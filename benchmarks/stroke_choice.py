"""How a reconstruction agent should spend its time checking strokes: more proposals, or refining.

``Agent.paint_all(proposals=K, refine=R)`` paints each stroke as the best of ``K`` the policy proposes,
then hill-climbs it up to ``R`` rounds (``spiral.search.hill_climb``). Both buy a lower error with
renders on a scratch canvas. This paints the same validation images greedy with each setting, in one
process and in the same run, and prints each one's error and time against the first setting's (by
default 64 proposals, what more proposals alone reach for about the time of 16 refined 4 rounds).

    python benchmarks/stroke_choice.py [--agent photos-paint] [--count 64] [--settings 64:0 16:0 16:4 32:2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from spiral.agent import load_agent
from spiral.experiment import Experiment
from spiral.shipped import AGENTS_DIR


def setting(text: str) -> tuple[int, int]:
    """``K:R``: K proposals a stroke, refined R rounds."""
    proposals, refine = (int(part) for part in text.split(":"))
    return proposals, refine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="photos-paint", help="a shipped reconstruction agent (photos-paint)")
    parser.add_argument("--count", type=int, default=64, help="validation images (default 64: one batch)")
    parser.add_argument("--settings", nargs="+", type=setting, default=[(64, 0), (16, 0), (16, 4), (32, 2)],
                        metavar="K:R", help="proposals:refine pairs; the first is the baseline (64:0 16:0 16:4 32:2)")
    args = parser.parse_args()
    agent = load_agent(AGENTS_DIR / args.agent)
    targets = Experiment.from_preset(args.agent).images("validation")[:args.count]
    print(f"{len(targets)} validation images of {args.agent}, greedy, one process:")
    print(f"  {'proposals':>9}{'refine':>8}{'MSE':>9}{'seconds':>10}{'time ratio':>12}")
    baseline = None
    for proposals, refine in args.settings:
        start = time.perf_counter()
        episodes = agent.paint_all(targets, greedy=True, proposals=proposals, refine=refine)
        seconds = time.perf_counter() - start
        baseline = baseline or seconds
        print(f"  {proposals:>9}{refine:>8}{np.mean([episode.l2 for episode in episodes]):>9.4f}{seconds:>10.1f}"
              f"{seconds / baseline:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
