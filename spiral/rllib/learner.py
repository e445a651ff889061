"""RLlib's IMPALA and APPO learners, extended the SPIRAL way: the discriminator learns here too.

Every update (1) replaces the batch's rewards, whatever the environment returned, with the
policy's rewards (``spiral.rewards``) made from its canvases with the *current* discriminator,
(2) runs IMPALA's V-trace loss on them, with per-component entropy bonuses and floors instead
of one entropy coefficient, and (3) trains the discriminator on real images against the batch's
final canvases (through a replay of recent fakes). For ``training.critic_warmup_steps`` env steps
the policy holds still while the discriminator and the value head learn.

Batch layout (RLlib 2.60, stateful module, one episode per row): every column is (B, T) with
T = episode_length + 1, because IMPALA appends the final observation as an extra, loss-masked
row. Row t holds the canvas *before* action t, so the canvas after action t is row t + 1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.impala.torch.impala_torch_learner import IMPALATorchLearner
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import Learner
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from spiral.discriminator import FakeReplay, replayed_loss
from spiral.experiment import DISCRIMINATOR_MODES, Experiment
from spiral.policy import autocast
from spiral.rewards import (
    RunningScale,
    discriminator_scores,
    final_canvas_steps,
    painted_strokes,
    policy_rewards,
)
from spiral.rllib.module import DISCRIMINATOR_ID, DiscriminatorModule


class SpiralLearnerMixin:
    """What SPIRAL adds to RLlib's IMPALA and APPO learners (the classes at the end of this file).

    Reads its experiment from ``config.learner_config_dict["experiment"]``.
    """

    def rl_module_is_compatible(self, module) -> bool:
        """The discriminator has no value function or target network, and is trained here all the same."""
        return isinstance(module.unwrapped(), DiscriminatorModule) or super().rl_module_is_compatible(module)

    def build(self) -> None:
        super().build()
        self.experiment = Experiment.from_dict(self.config.learner_config_dict["experiment"])
        self.replay = FakeReplay(self.experiment.discriminator.replay_batches)
        self.generator = torch.Generator().manual_seed(self.experiment.training.seed)
        self.real_images = None
        if not self.experiment.reward.conditional:
            self.real_images = torch.from_numpy(self.experiment.images("train").copy())
        # Population-based training scales every entropy coefficient by this (spiral.rllib.pbt).
        self.entropy_scale = float(self.config.learner_config_dict.get("entropy_scale", 1.0))
        self.reward_scale = RunningScale()
        self.env_steps_sampled = 0  # the run's, as the algorithm counts them (resumed runs included)
        autocast(self.experiment.training.precision, self._device)  # bf16 on a device without it: refused now

    def configure_optimizers_for_module(self, module_id: str, config=None) -> None:
        """The discriminator gets SPIRAL's Adam (beta1 0.5) and its own learning rate."""
        if module_id != DISCRIMINATOR_ID:
            return super().configure_optimizers_for_module(module_id, config)
        # Called from inside super().build(), before build() above has set self.experiment.
        settings = Experiment.from_dict(self.config.learner_config_dict["experiment"]).discriminator
        params = self.get_parameters(self.module[module_id])
        self.register_optimizer(
            module_id=module_id, optimizer=torch.optim.Adam(params, betas=(0.5, 0.999)),
            params=params, lr_or_lr_schedule=settings.lr,
        )

    @override(Learner)
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self.env_steps_sampled = timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)

    @property
    def discriminator(self) -> torch.nn.Module:
        return self.module[DISCRIMINATOR_ID].unwrapped().net

    def compute_losses(self, *, fwd_out: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        policy_batch = batch[DEFAULT_MODULE_ID]
        policy_batch[Columns.REWARDS] = self.rewards(policy_batch)
        losses = super().compute_losses(fwd_out=fwd_out, batch=batch)
        if self.experiment.reward.mode in DISCRIMINATOR_MODES:
            losses[DISCRIMINATOR_ID] = self.discriminator_update_loss(policy_batch)
        else:  # nothing to judge: no forward, no gradient penalty, weights left as they are
            losses[DISCRIMINATOR_ID] = zero_gradients(self.discriminator)
        return losses

    # -- rewards -----------------------------------------------------------------------------

    def rewards(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, T) rewards for the (B, T) rows, zero on masked rows: ``spiral.rewards`` on this batch."""
        settings = self.experiment.reward
        canvases = batch[Columns.OBS]["canvas"]
        targets = batch[Columns.OBS].get("target")
        mask = batch[Columns.LOSS_MASK].float()
        scores = None
        if settings.mode in DISCRIMINATOR_MODES:
            scores = discriminator_scores(
                self.discriminator, canvases, targets if settings.conditional else None,
                kind=self.experiment.discriminator.loss, complement=settings.complement, generator=self.generator,
            )
        rewards = policy_rewards(
            settings, canvases=canvases, targets=targets, mask=mask, terminated=batch[Columns.TERMINATEDS].float(),
            painted=painted_strokes(batch[Columns.ACTIONS], self.experiment.paint_config().use_flag),
            scores=scores, scale=self.reward_scale,
        )
        self.metrics.log_dict(
            {"reward_mean": (rewards.sum() / mask.sum().clamp(min=1)).item()}, key=DEFAULT_MODULE_ID, window=1
        )
        if self.reward_scale.value is not None:
            self.metrics.log_dict({"score_scale": self.reward_scale.value}, key=DISCRIMINATOR_ID, window=1)
        return rewards

    # -- the discriminator -------------------------------------------------------------------

    def discriminator_update_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The discriminator's loss on real images vs. recent final canvases (``replayed_loss``)."""
        settings, reward = self.experiment.discriminator, self.experiment.reward
        final = final_canvas_steps(batch[Columns.TERMINATEDS])
        fakes = batch[Columns.OBS]["canvas"][final]
        loss, stats = replayed_loss(
            self.discriminator, self.replay, fakes, batch[Columns.OBS]["target"][final] if reward.conditional else None,
            kind=settings.loss, gp_weight=settings.gp_weight, complement=reward.complement,
            real_images=self.real_images, generator=self.generator,
        )
        # The episodes this update ended: one per batch row, as the rewards assume (spiral.rewards).
        stats["final_canvases"] = fakes.shape[0]
        self.metrics.log_dict(stats, key=DISCRIMINATOR_ID, window=1)
        return loss

    # -- the policy's loss: IMPALA's, with per-component entropy ------------------------------

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        training = self.experiment.training
        net = self.module[module_id].unwrapped().net
        warming_up = self.env_steps_sampled < training.critic_warmup_steps
        if warming_up:  # no gradient reaches the torso or the action heads: only the value head learns
            fwd_out = {**fwd_out, Columns.ACTION_DIST_INPUTS: fwd_out[Columns.ACTION_DIST_INPUTS].detach(),
                       Columns.EMBEDDINGS: fwd_out[Columns.EMBEDDINGS].detach()}
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        mask = batch[Columns.LOSS_MASK].float()
        entropies = net.entropies(fwd_out[Columns.ACTION_DIST_INPUTS])  # (B, T, components)
        entropies = (entropies * mask[..., None]).sum((0, 1)) / mask.sum().clamp(min=1)
        maximal = torch.log(torch.tensor(net.nvec, dtype=entropies.dtype, device=entropies.device))
        weights = torch.tensor([training.entropy_weights.get(name, 1.0) for name in net.names],
                               dtype=entropies.dtype, device=entropies.device)
        bonus = self.entropy_scale * training.entropy_coeff * (weights * entropies).sum()
        shortfall = F.relu(training.entropy_floor * maximal - entropies).sum()
        self.metrics.log_dict({f"entropy_{name}": value.item() for name, value in zip(net.names, entropies)},
                              key=module_id, window=1)
        loss = loss - bonus + training.entropy_floor_coeff * shortfall
        if training.anchor_kl > 0:
            module = self.module[module_id].unwrapped()
            divergence = net.divergences(fwd_out[Columns.ACTION_DIST_INPUTS], module.anchor_logits(batch)).sum(-1)
            divergence = (divergence * mask).sum() / mask.sum().clamp(min=1)
            self.metrics.log_dict({"anchor_kl": divergence.item()}, key=module_id, window=1)
            loss = loss + training.anchor_kl * divergence
        self.metrics.log_dict({"critic_warmup": float(warming_up)}, key=module_id, window=1)
        return loss + zero_gradients(net) if warming_up else loss


def zero_gradients(module: torch.nn.Module) -> torch.Tensor:
    """A loss of exactly 0 that reaches every parameter of ``module``.

    RLlib's optimiser step wants a gradient tensor for every parameter it holds, so a module (or
    part of one) that must not learn cannot simply be left out of the losses: zero gradients leave
    Adam's moments, and so the weights, unchanged (an idle discriminator, a policy during the
    critic's warm-up), at the cost of a sum instead of a forward and a backward.
    """
    return sum(parameter.sum() for parameter in module.parameters()) * 0.0


class SpiralImpalaLearner(SpiralLearnerMixin, IMPALATorchLearner):
    """IMPALA (V-trace), SPIRAL's own choice."""


class SpiralAppoLearner(SpiralLearnerMixin, APPOTorchLearner):
    """APPO: V-trace with PPO's clipped surrogate against a target network."""
