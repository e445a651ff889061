"""End-to-end training throughput against the bare environment, measured in the same run.

Trains a preset (default ``mnist-recon``, its dataset limited so that loading is quick) on a
local Ray for a few iterations and counts env steps per second once it is warm; then samples
with one env runner alone (no learner beside it: the ceiling that a faster learner cannot lift),
steps the same environment with random actions in this process, and trains the same experiment
with the plain single-process PyTorch loop of ``torch_loop.py``. Prints the rates and the figures of
merit: training rate / (raw env rate x env-runner cores), goal >= 0.5, and RLlib / plain loop,
goal >= 1.0, each round's RLlib against the same round's loop (``--rounds``, interleaved, since
this machine drifts). RLlib runs with the learner in the driver (``num_learners=0``, what ``spiral
train`` does) on the torch threads that ``spiral train`` gives it (the cores its env runners leave)
and, with ``--learners 0 1``, also as one remote learner actor, to compare the two; with
``--learner-threads 2``, also with the driver's learner on two threads.

    python benchmarks/training_speed.py [--preset mnist-recon] [--iterations 12] [--rounds 3]
        [--learners 0 1] [--learner-threads N ...] [overrides...]
"""

from __future__ import annotations

import argparse
import time
from statistics import median

import ray
import torch
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from torch_loop import plain_loop_rate  # benchmarks/, the script's own folder

from spiral.experiment import Experiment
from spiral.rllib.algorithm import build_config, make_env
from spiral.rllib.trainer import connect, cores_for_learner


def raw_env_rate(experiment: Experiment, seconds: float = 3.0) -> float:
    env = make_env({"experiment": experiment.to_dict()})
    env.reset(seed=0)
    env.action_space.seed(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated:
            env.reset()
    return steps / (time.perf_counter() - start)


def sampling_rate(experiment: Experiment, samples: int = 5) -> float:
    """One env runner's ``sample()`` alone, in this process on one torch thread: what sampling
    costs (environments, the policy's forward, RLlib's connectors) with no learner beside it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray worker with one CPU
    runner = SingleAgentEnvRunner(config=build_config(experiment))
    try:
        runner.sample()  # warm-up
        steps, start = 0, time.perf_counter()
        for _ in range(samples):
            steps += sum(len(episode) for episode in runner.sample())
        return steps / (time.perf_counter() - start)
    finally:
        runner.stop()
        torch.set_num_threads(threads)


def training_rate(experiment: Experiment, iterations: int, learners: int = 0, warmup: int = 3,
                  learner_threads: int | None = None) -> tuple[float, int]:
    """Env steps/s of training once warm, and the env runners it had. The learner in this driver
    gets ``learner_threads`` torch threads, by default what ``spiral train`` gives it."""
    config = build_config(experiment).learners(num_learners=learners)
    algo = config.build_algo()
    threads = torch.get_num_threads()
    torch.set_num_threads(learner_threads or cores_for_learner(algo))
    try:
        for _ in range(warmup):
            algo.train()
        steps_before, start = algo.train()["num_env_steps_sampled_lifetime"], time.perf_counter()
        for _ in range(iterations):
            steps = algo.train()["num_env_steps_sampled_lifetime"]
        return (steps - steps_before) / (time.perf_counter() - start), config.num_env_runners
    finally:
        algo.stop()
        torch.set_num_threads(threads)


def round_ratios(rates: list[float], baselines: list[float]) -> str:
    """The median of each round's ratio, then the rounds' own: '1.02x (1.10, 1.02, 0.95)'."""
    ratios = [rate / baseline for rate, baseline in zip(rates, baselines)]
    return f"{median(ratios):.2f}x ({', '.join(f'{ratio:.2f}' for ratio in ratios)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist-recon")
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every measurement, interleaved (this machine drifts by 20-30%% in an hour)")
    parser.add_argument("--learners", type=int, nargs="+", default=[0], help="num_learners values to measure")
    parser.add_argument("--learner-threads", type=int, nargs="*", default=[],
                        help="also train with the driver's learner on this many torch threads (spiral train's choice: "
                             "the cores its env runners leave)")
    parser.add_argument("overrides", nargs="*", help="section.field=value, after data.limit=2000 (a quick load)")
    args = parser.parse_args()
    if args.rounds < 1 or args.iterations < 1 or min(args.learner_threads, default=1) < 1:
        parser.error("--rounds, --iterations and --learner-threads must be at least 1")
    experiment = Experiment.from_preset(args.preset, ["data.limit=2000", *args.overrides])
    variants = [(learners, None) for learners in args.learners] + [(0, threads) for threads in args.learner_threads]
    rates: dict[tuple[int, int | None], list[float]] = {variant: [] for variant in variants}
    plain: list[float] = []
    for round_ in range(args.rounds):
        print(f"round {round_ + 1} of {args.rounds}", flush=True)
        connect(None)  # as `spiral train` starts Ray: env runners at the learner's priority
        for learners, threads in variants:
            rate, runners = training_rate(experiment, args.iterations, learners, learner_threads=threads)
            rates[learners, threads].append(rate)
        if round_ == 0:
            sampling = sampling_rate(experiment)
        ray.shutdown()  # the plain loop has the machine to itself, as RLlib had
        plain.append(plain_loop_rate(experiment))
    raw = raw_env_rate(experiment)

    print(f"preset {args.preset}, {experiment.training.envs_per_env_runner} envs per env runner, "
          f"{runners} env runner(s); medians of {args.rounds} interleaved rounds, each round's ratio in brackets")
    for (learners, threads), train in rates.items():
        learner = (f"the learner on {threads} torch thread(s)" if threads
                   else "as spiral train runs it" if learners == 0 else "remote learner actor(s)")
        print(f"RLlib, num_learners={learners}, {learner}: {median(train):8.0f} env steps/s (sampling + learning)")
        print(f"  training / (raw x runner cores): {median(train) / (raw * runners):.2f} (goal >= 0.5)")
        print(f"  RLlib / plain loop: {round_ratios(train, plain)} (goal >= 1.0)")
        if (learners, threads) != variants[0]:
            print(f"  against the first RLlib line: {round_ratios(train, rates[variants[0]])}")
    print(f"sampling alone, one env runner, no learner: {sampling:8.0f} env steps/s")
    print(f"raw environment, random actions: {raw:8.0f} env steps/s per core")
    print(f"plain PyTorch loop (same network, A2C): {median(plain):8.0f} env steps/s "
          f"({', '.join(f'{rate:.0f}' for rate in plain)})")


if __name__ == "__main__":
    main()
