"""How long an agent takes to paint many images: all at once against one at a time.

Training checkpoints (the validation images that choose ``best/``, the test images of the curve),
``spiral eval`` and the generator's judgement paint tens to thousands of images. ``Agent.paint_all``
runs the network once per step on all of them (``PAINT_BATCH`` at a time); the baseline is
``Agent.paint`` on each in turn, what those paths did before. Both paint the same validation
images (or seeds, for a generator) in the same run, greedy, and the script counts the paintings
whose strokes are identical (a batch rounds differently, so a near tie could flip a choice).

    python benchmarks/painting.py [--agents mnist-pen photos-paint mnist-pen-gen] [--count 100]
"""

from __future__ import annotations

import argparse
import time

from spiral.agent import load_agent
from spiral.experiment import Experiment
from spiral.shipped import AGENTS_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="+", default=["mnist-pen", "photos-paint", "mnist-pen-gen"],
                        help="shipped agents; a reconstruction agent paints its preset's validation images")
    parser.add_argument("--count", type=int, default=100, help="paintings per agent (default 100)")
    args = parser.parse_args()
    print(f"{args.count} greedy paintings per agent, on {len(args.agents)} shipped agents:")
    print(f"  {'agent':<16}{'one at a time':>15}{'paint_all':>12}{'speed-up':>10}   identical strokes")
    for name in args.agents:
        agent = load_agent(AGENTS_DIR / name)
        if agent.conditional:
            targets = Experiment.from_preset(name).images("validation")[:args.count]
            seeds = range(len(targets))

            def alone():
                return [agent.paint(target, seed=seed, greedy=True) for seed, target in zip(seeds, targets)]

            def together():
                return agent.paint_all(targets, seeds, greedy=True)
        else:
            seeds = range(args.count)

            def alone():
                return [agent.paint(seed=seed, greedy=True) for seed in seeds]

            def together():
                return agent.paint_all(seeds=seeds, greedy=True)
        start = time.perf_counter()
        baseline = alone()
        middle = time.perf_counter()
        batched = together()
        end = time.perf_counter()
        same = sum(a.actions == b.actions for a, b in zip(baseline, batched))
        print(f"  {name:<16}{middle - start:>13.2f} s{end - middle:>10.2f} s{(middle - start) / (end - middle):>9.2f}x"
              f"   {same}/{len(baseline)}", flush=True)


if __name__ == "__main__":
    main()
