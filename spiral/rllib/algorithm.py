"""An ``Experiment`` as an RLlib IMPALA configuration: environment, modules, learner, resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.algorithms.impala import IMPALAConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.tune.registry import register_env

from envs import PaintEnv
from spiral.agent import load_agent
from spiral.experiment import Experiment
from spiral.rllib.learner import SpiralAppoLearner, SpiralImpalaLearner
from spiral.rllib.module import DISCRIMINATOR_ID, DiscriminatorModule, SpiralPolicyModule

ENV_NAME = "spiral-paint"


class TrainingTargets:
    """Training images drawn from a random stream of their own, seeded once.

    RLlib's env runner samples whole episodes (``batch_mode="complete_episodes"``) by resetting
    its environments with the configured seed at every ``sample()`` call. Targets drawn from the
    environment's ``np_random`` would then be the same few images every iteration (one per
    environment: mnist-pen's RL stages trained on 16 digits before this class). This stream is
    seeded from the environment's generator at the first draw, so it differs between environments
    and follows ``training.seed``, and later re-seeding leaves it alone.
    """

    def __init__(self, images: np.ndarray):
        self.images = images
        self._rng: np.random.Generator | None = None

    def __call__(self, env_rng: np.random.Generator) -> np.ndarray:
        if self._rng is None:
            self._rng = np.random.default_rng(env_rng.integers(2**63))
        return self.images[self._rng.integers(len(self.images))]


def make_env(env_config: dict[str, Any]) -> PaintEnv:
    """The training environment of an experiment; conditional ones paint dataset images."""
    experiment = Experiment.from_dict(env_config["experiment"])
    targets = TrainingTargets(experiment.images("train")) if experiment.reward.conditional else None
    return PaintEnv(experiment.paint_config(), target_source=targets)


def module_specs(experiment: Experiment) -> MultiRLModuleSpec:
    """The policy (everywhere) and the discriminator (learners only).

    With ``training.init_from`` the policy starts from that agent's weights: the whole agent is
    loaded here once, so that weights that do not fit are refused before any worker starts.
    """
    init_from = experiment.training.init_from
    if init_from is not None:
        load_agent(init_from)
    env = make_env({"experiment": experiment.to_dict()})
    paint = env.config
    policy = RLModuleSpec(
        module_class=SpiralPolicyModule,
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={
            "action_names": list(env.codec.names),
            "action_nvec": env.codec.nvec.tolist(),
            "grid_size": paint.grid_size,
            "conditional": env.conditional,
            "network": experiment.network_config().to_dict(),
            "max_seq_len": paint.episode_length + 1,  # one whole episode per row
            "precision": experiment.training.precision,
            # Absolute (the experiment resolves it): every learner and env runner loads it.
            **({} if init_from is None else {"init_from": str(Path(init_from) / "policy.pt"),
                                             "anchor": experiment.training.anchor_kl > 0}),
        },
    )
    if paint.height != paint.width:
        raise ValueError(f"The discriminator needs a square canvas, got {paint.canvas_size}.")
    discriminator = RLModuleSpec(
        module_class=DiscriminatorModule,
        observation_space=env.observation_space,
        action_space=env.action_space,
        learner_only=True,
        model_config={
            "size": paint.width,
            "width": experiment.discriminator.width,
            "conditional": experiment.reward.conditional,
            "spectral_norm": experiment.discriminator.spectral_norm,
        },
    )
    env.close()
    return MultiRLModuleSpec(rl_module_specs={DEFAULT_MODULE_ID: policy, DISCRIMINATOR_ID: discriminator})


def build_config(experiment: Experiment, *, min_time_s_per_iteration: float = 1.0,
                 env_runner_resources: dict[str, float] | None = None) -> IMPALAConfig | APPOConfig:
    """IMPALA (V-trace) or APPO on the new API stack, with SPIRAL's learner and modules.

    ``training.num_env_runners = 0`` means one runner per CPU of the cluster but one (the
    learner's). ``env_runner_resources`` pins runners to nodes that offer those custom resources.
    A runner that dies is restarted and training goes on.
    """
    register_env(ENV_NAME, make_env)
    paint, training = experiment.paint_config(), experiment.training
    runners = training.num_env_runners or max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)
    appo = training.algorithm == "appo"
    return (
        (APPOConfig() if appo else IMPALAConfig())
        .environment(ENV_NAME, env_config={"experiment": experiment.to_dict()})
        .env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=training.envs_per_env_runner,
            rollout_fragment_length=paint.episode_length,
            batch_mode="complete_episodes",
            use_env_runner_state_server=False,
            custom_resources_per_env_runner=env_runner_resources or {},
        )
        .fault_tolerance(
            restart_failed_env_runners=True,
            max_num_env_runner_restarts=100,
            delay_between_env_runner_restarts_s=1.0,
        )
        .learners(
            num_learners=0,
            num_gpus_per_learner=1 if torch.cuda.is_available() else 0,
            learner_class=SpiralAppoLearner if appo else SpiralImpalaLearner,
            learner_config_dict={"experiment": experiment.to_dict()},
        )
        .training(
            lr=training.lr,
            gamma=training.gamma,
            entropy_coeff=0.0,  # the learner adds per-component entropy bonuses itself
            vf_loss_coeff=training.vf_loss_coeff,
            grad_clip=training.grad_clip,
            train_batch_size_per_learner=training.batch_episodes * paint.episode_length,
        )
        .rl_module(rl_module_spec=module_specs(experiment))
        .reporting(min_time_s_per_iteration=min_time_s_per_iteration)
        .debugging(seed=training.seed)
    )
