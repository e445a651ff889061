"""RLlib's IMPALA and APPO learners, extended the SPIRAL way: the discriminator learns here too.

Every update (1) computes the policy's rewards from the canvases in the batch with the
*current* discriminator, (2) runs IMPALA's V-trace loss on them, with per-component entropy
bonuses and floors instead of one entropy coefficient, and (3) trains the discriminator on
real images against the batch's final canvases (through a replay of recent fakes).

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

from envs.actions import PAINT
from spiral.discriminator import (
    FakeReplay,
    complement_pairs,
    conditional_pairs,
    discriminator_loss,
    reward_scores,
    to_input,
)
from spiral.experiment import Experiment
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
        # For tests and debugging: the last rewards with the canvases and weights they came from.
        self.record_rewards = bool(self.config.learner_config_dict.get("record_rewards", False))
        # Population-based training scales every entropy coefficient by this (spiral.rllib.pbt).
        self.entropy_scale = float(self.config.learner_config_dict.get("entropy_scale", 1.0))
        self.last_rewards: dict[str, Any] | None = None
        self.score_scale: float | None = None

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

    @property
    def discriminator(self) -> torch.nn.Module:
        return self.module[DISCRIMINATOR_ID].unwrapped().net

    def compute_losses(self, *, fwd_out: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        policy_batch = batch[DEFAULT_MODULE_ID]
        policy_batch[Columns.REWARDS] = self.rewards(policy_batch)
        losses = super().compute_losses(fwd_out=fwd_out, batch=batch)
        losses[DISCRIMINATOR_ID] = self.discriminator_update_loss(policy_batch)
        return losses

    # -- rewards -----------------------------------------------------------------------------

    def rewards(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, T) rewards for the (B, T) rows, zero on masked rows."""
        settings = self.experiment.reward
        canvases = batch[Columns.OBS]["canvas"]
        targets = batch[Columns.OBS].get("target")
        mask = batch[Columns.LOSS_MASK].float()
        terminated = batch[Columns.TERMINATEDS].float()
        rewards = torch.zeros_like(mask)
        scores = None
        if settings.mode in ("final", "temporal", "mix"):
            scores = self._scores(canvases, targets)
            if settings.normalize:
                scores = scores / self._score_scale(scores, mask)
            after = _next_row(scores)
            discriminator = after * terminated if settings.mode == "final" else (after - scores) * mask
            rewards = rewards + settings.discriminator_weight * discriminator
        if settings.mode in ("l2", "mix"):
            distance = _squared_error(canvases, targets)
            if settings.normalize and settings.mode == "l2":
                distance = distance / self._score_scale(distance, mask)
            weight = settings.l2_weight if settings.mode == "mix" else 1.0
            rewards = rewards + weight * (distance - _next_row(distance)) * mask
        if settings.stroke_penalty:
            # Without a flag in the action space every stroke paints.
            flag = self.experiment.paint_config().use_flag
            painted = (batch[Columns.ACTIONS][..., 0] == PAINT).float() if flag else torch.ones_like(mask)
            rewards = rewards - settings.stroke_penalty * painted * mask
        if settings.blank_penalty:
            blank = (_next_row(canvases.flatten(2).float().std(-1)) == 0).float()
            rewards = rewards - settings.blank_penalty * blank * terminated
        if self.record_rewards:
            self.last_rewards = {
                "rewards": rewards.detach().cpu(), "canvases": canvases.cpu(), "mask": mask.cpu(),
                "terminated": terminated.cpu(), "targets": None if targets is None else targets.cpu(),
                "discriminator": {k: v.detach().cpu().clone() for k, v in self.discriminator.state_dict().items()},
                "score_scale": max(self.score_scale, 1e-3) if settings.normalize and scores is not None else 1.0,
            }
        self.metrics.log_dict(
            {"reward_mean": (rewards.sum() / mask.sum().clamp(min=1)).item()}, key=DEFAULT_MODULE_ID, window=1
        )
        return rewards

    def _score_scale(self, scores: torch.Tensor, mask: torch.Tensor) -> float:
        """A running (exponential, factor 0.99) average of the scores' standard deviation."""
        spread = scores[mask.bool()].std().item() if mask.sum() > 1 else 1.0
        self.score_scale = spread if self.score_scale is None else 0.99 * self.score_scale + 0.01 * spread
        self.metrics.log_dict({"score_scale": self.score_scale}, key=DISCRIMINATOR_ID, window=1)
        return max(self.score_scale, 1e-3)

    def _scores(self, canvases: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Discriminator rewards for every row: (B, T, H, W, 3) uint8 -> (B, T)."""
        batch, steps = canvases.shape[:2]
        pictures = to_input(canvases.flatten(0, 1))
        conditions = None if targets is None or not self.experiment.reward.conditional else to_input(targets.flatten(0, 1))
        if self.experiment.reward.complement:
            # Judge the painted half against the rest of the target, with a fresh mask per row.
            _, _, pictures, conditions = complement_pairs(conditions, pictures, self.generator)
        kind = self.experiment.discriminator.loss
        return reward_scores(self.discriminator, pictures, conditions, kind=kind).view(batch, steps)

    # -- the discriminator -------------------------------------------------------------------

    def discriminator_update_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The discriminator's loss on real images vs. recent final canvases."""
        settings, reward = self.experiment.discriminator, self.experiment.reward
        final = _next_row_mask(batch[Columns.TERMINATEDS])
        fakes = batch[Columns.OBS]["canvas"][final]
        fake_targets = batch[Columns.OBS]["target"][final] if reward.conditional else None
        self.replay.add(fakes, fake_targets)
        count = fakes.shape[0]
        fake, fake_target = self.replay.sample(count, self.generator)
        device = fakes.device
        fake = to_input(fake.to(device))
        if reward.conditional:
            fake_target = to_input(fake_target.to(device))
            if reward.complement:
                real, real_target, fake, fake_target = complement_pairs(fake_target, fake, self.generator)
            else:
                real, real_target, fake, fake_target = conditional_pairs(fake_target, fake)
        else:
            index = torch.randint(len(self.real_images), (count,), generator=self.generator)
            real, real_target = to_input(self.real_images[index].to(device)), None
        options = {"gp_weight": settings.gp_weight, "generator": None} if settings.loss == "wgan-gp" else {}
        loss, stats = discriminator_loss(settings.loss, self.discriminator, real, fake, real_target, fake_target, **options)
        self.metrics.log_dict(stats, key=DISCRIMINATOR_ID, window=1)
        return loss

    # -- the policy's loss: IMPALA's, with per-component entropy ------------------------------

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        if self.record_rewards:
            self.last_rewards["seen_by_loss"] = batch[Columns.REWARDS].detach().cpu()
        training = self.experiment.training
        net = self.module[module_id].unwrapped().net
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
        return loss - bonus + training.entropy_floor_coeff * shortfall


class SpiralImpalaLearner(SpiralLearnerMixin, IMPALATorchLearner):
    """IMPALA (V-trace), SPIRAL's own choice."""


class SpiralAppoLearner(SpiralLearnerMixin, APPOTorchLearner):
    """APPO: V-trace with PPO's clipped surrogate against a target network."""


def _next_row(values: torch.Tensor) -> torch.Tensor:
    """values[:, t + 1] at position t (the last position gets a copy of itself: it is masked)."""
    return torch.cat([values[:, 1:], values[:, -1:]], dim=1)


def _next_row_mask(terminated: torch.Tensor) -> torch.Tensor:
    """Where the rows after terminal steps are: the final canvases."""
    return torch.cat([torch.zeros_like(terminated[:, :1]), terminated[:, :-1]], dim=1).bool()


def _squared_error(canvases: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T) mean squared error in [0, 1] pixels between canvases and targets."""
    difference = (canvases.float() - targets.float()) / 255.0
    return (difference * difference).flatten(2).mean(-1)
