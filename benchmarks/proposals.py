"""How long a reconstruction agent's policy takes to propose strokes: spatial heads shared, or run on every copy.

``PolicyNetwork.propose`` draws K strokes for each episode from its features
(``Agent.paint_all(proposals=K)``, ``spiral eval --proposals``, the app's "Proposals per step"). Its
spatial heads (end and control point: transposed convolutions to a grid of logits) are most of the
network's cost, and their input is fixed by the episode and the choices made before them, so
``propose`` runs each once per distinct (episode, choices so far): the end point's head twice an
episode (paint or not), the control point's once per distinct end point, reading the episode's
features without copying them. The baseline copies the features K times and runs the heads on every
copy, as ``propose`` did before. Both draw from the same random numbers in the same run, on the
features of real mid-painting states (the agent's own greedy strokes on validation images, the
first 10 steps), and the script counts the draws that agree.

    python benchmarks/proposals.py [--agent photos-paint] [--count 20] [--proposals 7 15 31 63]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from envs import PaintEnv
from spiral.agent import load_agent
from spiral.experiment import Experiment
from spiral.shipped import AGENTS_DIR

STEPS = 10  # painting steps whose states are measured
REPEATS = 3  # each timing is the fastest of this many


def mid_painting_features(agent, targets: np.ndarray) -> list[torch.Tensor]:
    """The policy's features at each of the first ``STEPS`` states of its greedy paintings of ``targets``."""
    policy = agent.policy
    envs = [PaintEnv(agent.paint_config, target_source=target[None]) for target in targets]
    observations = [env.reset(seed=i, options={"target": target})[0] for i, (env, target) in enumerate(zip(envs, targets))]
    state, features_by_step = policy.initial_state(len(envs)), []
    for _ in range(STEPS):
        batch = {key: torch.as_tensor(np.stack([observation[key] for observation in observations]))[:, None]
                 for key in observations[0]}
        features, state = policy.features(batch, state)
        features_by_step.append(features)
        chosen = policy.sample(features, greedy=True)[0][:, 0].numpy()
        observations = [env.step(action)[0] for env, action in zip(envs, chosen)]
    for env in envs:
        env.close()
    return features_by_step


def fastest(run) -> tuple[float, list]:
    """The fastest of ``REPEATS`` runs of ``run`` (seconds) and its results."""
    best, results = float("inf"), None
    for _ in range(REPEATS):
        start = time.perf_counter()
        results = run()
        best = min(best, time.perf_counter() - start)
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="photos-paint", help="a shipped reconstruction agent (photos-paint)")
    parser.add_argument("--count", type=int, default=20, help="validation images painted together (default 20)")
    parser.add_argument("--proposals", nargs="+", type=int, default=[7, 15, 31, 63],
                        help="proposals drawn per episode and step, besides the policy's own (7 15 31 63)")
    args = parser.parse_args()
    agent = load_agent(AGENTS_DIR / args.agent)
    policy = agent.policy
    targets = Experiment.from_preset(args.agent).images("validation")[:args.count]
    features_by_step = mid_painting_features(agent, targets)
    rows, heads = len(targets), len(policy.names)
    print(f"{args.agent}: {rows} episodes x the first {STEPS} steps of their greedy paintings, one process:")
    print(f"  {'proposals':>9}{'every copy':>13}{'shared':>10}{'speed-up':>10}   same draws")
    torch.set_grad_enabled(False)
    for count in args.proposals:
        generator = torch.Generator().manual_seed(count)
        uniforms = [torch.rand((count * rows, heads), generator=generator) for _ in features_by_step]
        origins = torch.arange(rows).repeat(count)

        def draw(shared: bool) -> list[torch.Tensor]:
            if shared:
                return [policy._autoregress(features, None, False, None, 1.0, draws, origins)[0]
                        for features, draws in zip(features_by_step, uniforms)]
            return [policy._autoregress(features.reshape(rows, -1).repeat(count, 1), None, False, None, 1.0, draws)[0]
                    for features, draws in zip(features_by_step, uniforms)]

        baseline, every_copy = fastest(lambda: draw(False))
        seconds, shared = fastest(lambda: draw(True))
        same = sum(int((a == b).all(-1).sum()) for a, b in zip(every_copy, shared))
        print(f"  {count:>9}{baseline:>11.3f} s{seconds:>8.3f} s{baseline / seconds:>9.2f}x"
              f"   {same}/{count * rows * STEPS}", flush=True)


if __name__ == "__main__":
    main()
