"""A plain single-process PyTorch training loop, the CleanRL way, and its end-to-end env steps per second.

What a user would write instead of RLlib, to compare with it on one machine: the experiment's
``envs_per_env_runner`` environments stepped in lockstep in this process, whole episodes sampled
with the same ``PolicyNetwork``, then one A2C update per ``batch_episodes`` episodes (on-policy, so
discounted returns with ``training.gamma`` instead of V-trace) on the learner's rewards from
``spiral.rewards``. Discriminator reward modes build the ``Discriminator`` and train it on the
batch's final canvases as the RLlib learner does. Left out: entropy floors, ``init_from`` and
``anchor_kl``. No Ray; ``benchmarks/training_speed.py`` runs this after RLlib and prints the ratio.

    python benchmarks/torch_loop.py [--preset mnist-recon] [--seconds 30] [overrides...]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from envs import PaintEnv, mse
from spiral.discriminator import Discriminator, FakeReplay, replayed_loss
from spiral.experiment import Experiment
from spiral.policy import PolicyNetwork
from spiral.rewards import (
    DISCRIMINATOR_MODES,
    RunningScale,
    discriminator_scores,
    painted_strokes,
    policy_rewards,
)

Batch = dict[str, torch.Tensor]


def stack(observations: list[dict[str, np.ndarray]], axis: int = 0) -> dict[str, np.ndarray]:
    """Observation dicts -> one dict of arrays stacked on a new ``axis`` (environments, or time)."""
    return {key: np.stack([observation[key] for observation in observations], axis) for key in observations[0]}


class PlainLoop:
    """Sampling and A2C updates of one experiment, with the time each takes and each batch's result."""

    def __init__(self, experiment: Experiment):
        self.experiment, training, reward = experiment, experiment.training, experiment.reward
        self.paint = paint = experiment.paint_config()
        torch.manual_seed(training.seed)
        targets = experiment.images("train") if reward.conditional else None  # as spiral.rllib.algorithm.make_env
        self.envs = [PaintEnv(paint, target_source=targets) for _ in range(training.envs_per_env_runner)]
        for index, env in enumerate(self.envs):
            env.reset(seed=training.seed + index)
        codec = self.envs[0].codec
        self.policy = PolicyNetwork(codec.names, tuple(codec.nvec.tolist()), paint.grid_size, reward.conditional,
                                    experiment.network_config())
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=training.lr)
        self.entropy_weights = torch.tensor([training.entropy_weights.get(name, 1.0) for name in codec.names])
        self.discriminator: Discriminator | None = None
        if reward.mode in DISCRIMINATOR_MODES:
            settings = experiment.discriminator
            self.discriminator = Discriminator(size=paint.width, width=settings.width, conditional=reward.conditional,
                                               spectral_norm=settings.spectral_norm)
            self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=settings.lr,
                                                            betas=(0.5, 0.999))
            self.replay = FakeReplay(settings.replay_batches)
            self.real_images = None if reward.conditional else torch.from_numpy(experiment.images("train").copy())
        self.generator = torch.Generator().manual_seed(training.seed)
        self.scale = RunningScale()
        self.sample_s = self.learn_s = 0.0
        self.returns: list[float] = []  # each batch's mean episode return (the learner's rewards)
        self.final_l2: list[float] = []  # each batch's mean squared error of the final canvases (conditional)

    # -- sampling ----------------------------------------------------------------------------

    def episodes(self) -> Batch:
        """One whole episode in every environment, as (N, T, ...) columns with T = episode_length + 1.

        The layout of ``spiral.rewards``: row t holds the observation before action t, and the
        last row the final observation, with a placeholder action that the loss masks.
        """
        observations = [stack([env.reset()[0] for env in self.envs])]
        actions, state = [], self.policy.initial_state(len(self.envs))
        with torch.inference_mode():
            for _ in range(self.paint.episode_length):
                features, state = self.policy.features(
                    {key: torch.from_numpy(value)[:, None] for key, value in observations[-1].items()}, state)
                action = self.policy.sample(features)[0][:, 0]
                actions.append(action)
                observations.append(stack([env.step(a)[0] for env, a in zip(self.envs, action.numpy())]))
        actions.append(torch.zeros_like(actions[-1]))
        batch = {key: torch.from_numpy(value) for key, value in stack(observations, axis=1).items()}
        return batch | {"actions": torch.stack(actions, 1)}

    def batch(self) -> Batch:
        """At least ``batch_episodes`` whole episodes, sampled by the current policy."""
        rounds = math.ceil(self.experiment.training.batch_episodes / len(self.envs))
        parts = [self.episodes() for _ in range(rounds)]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    # -- learning ----------------------------------------------------------------------------

    def rewards(self, batch: Batch, mask: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
        """(B, T) rewards of the experiment's reward mode, as ``spiral.rllib.learner`` makes them."""
        settings = self.experiment.reward
        scores = None
        if self.discriminator is not None:
            scores = discriminator_scores(
                self.discriminator, batch["canvas"], batch.get("target") if settings.conditional else None,
                kind=self.experiment.discriminator.loss, complement=settings.complement, generator=self.generator,
            )
        return policy_rewards(
            settings, canvases=batch["canvas"], targets=batch.get("target"), mask=mask, terminated=terminated,
            painted=painted_strokes(batch["actions"], self.paint.use_flag), scores=scores, scale=self.scale,
        )

    def discriminator_loss(self, batch: Batch) -> torch.Tensor:
        """Real images against recent final canvases, as ``spiral.rllib.learner`` trains it."""
        settings, reward = self.experiment.discriminator, self.experiment.reward
        return replayed_loss(
            self.discriminator, self.replay, batch["canvas"][:, -1], batch["target"][:, -1] if reward.conditional else None,
            kind=settings.loss, gp_weight=settings.gp_weight, complement=reward.complement,
            real_images=self.real_images, generator=self.generator,
        )[0]

    def update(self, batch: Batch) -> None:
        """One A2C step on the batch (and one discriminator step, in a discriminator reward mode)."""
        training, policy = self.experiment.training, self.policy
        episodes, steps = batch["actions"].shape[:2]
        mask = torch.ones(episodes, steps)
        mask[:, -1] = 0  # the final observation: no action was taken there
        terminated = torch.zeros(episodes, steps)
        terminated[:, -2] = 1
        rewards = self.rewards(batch, mask, terminated)
        returns, following = torch.zeros_like(rewards), torch.zeros(episodes)
        for t in reversed(range(steps)):  # every row is one whole episode: nothing to bootstrap
            returns[:, t] = following = rewards[:, t] + training.gamma * following

        observation = {key: value for key, value in batch.items() if key != "actions"}
        logits, features, _ = policy.training_pass(observation, policy.initial_state(episodes), batch["actions"],
                                                   training.precision)
        values = policy.value(features)
        masked_mean = lambda x: (x * mask).sum() / mask.sum()
        entropy = (policy.entropies(logits) * self.entropy_weights).sum(-1)
        loss = (masked_mean(-policy.log_prob(logits, batch["actions"]) * (returns - values).detach())
                + training.vf_loss_coeff * masked_mean(0.5 * (returns - values) ** 2)
                - training.entropy_coeff * masked_mean(entropy))
        networks, optimizers = [policy], [self.optimizer]
        if self.discriminator is not None:
            loss = loss + self.discriminator_loss(batch)
            networks.append(self.discriminator)
            optimizers.append(self.discriminator_optimizer)
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for network, optimizer in zip(networks, optimizers):
            torch.nn.utils.clip_grad_norm_(network.parameters(), training.grad_clip)
            optimizer.step()

        self.returns.append(rewards.sum(1).mean().item())
        if "target" in batch:
            self.final_l2.append(float(mse(batch["canvas"][:, -1].numpy(), batch["target"][:, -1].numpy()).mean()))

    def iteration(self) -> int:
        """Sample a batch and learn from it; returns the env steps taken."""
        start = time.perf_counter()
        batch = self.batch()
        sampled = time.perf_counter()
        self.update(batch)
        self.sample_s += sampled - start
        self.learn_s += time.perf_counter() - sampled
        return batch["actions"].shape[0] * self.paint.episode_length

    def rate(self, seconds: float, warmup: int) -> float:
        """Env steps per second over whole iterations for at least ``seconds``, after ``warmup`` of them."""
        for _ in range(warmup):
            self.iteration()
        self.sample_s = self.learn_s = 0.0
        steps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            steps += self.iteration()
        return steps / elapsed


def plain_loop_rate(experiment: Experiment, seconds: float = 30.0, warmup: int = 2) -> float:
    """End-to-end env steps per second of the plain loop (sampling + learning) once warm."""
    return PlainLoop(experiment).rate(seconds, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist-recon")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=int, default=2, help="iterations before the clock starts")
    parser.add_argument("overrides", nargs="*", default=["data.limit=2000"])
    args = parser.parse_args()
    experiment = Experiment.from_preset(args.preset, args.overrides)
    loop = PlainLoop(experiment)
    rate = loop.rate(args.seconds, args.warmup)
    print(f"preset {args.preset}, {len(loop.envs)} envs in this process, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, reward {experiment.reward.mode}")
    print(f"plain PyTorch loop (sampling + learning): {rate:8.0f} env steps/s")
    total = loop.sample_s + loop.learn_s
    print(f"time sampling / learning: {loop.sample_s / total:.0%} / {loop.learn_s / total:.0%}")
    print(f"mean episode return, first / last iteration: {loop.returns[0]:.4f} / {loop.returns[-1]:.4f} "
          f"({len(loop.returns)} iterations)")
    if loop.final_l2:
        print(f"mean final-canvas L2, first / last iteration: {loop.final_l2[0]:.4f} / {loop.final_l2[-1]:.4f}")


if __name__ == "__main__":
    main()
