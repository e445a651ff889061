"""The policy's rewards, made on the learner from a batch of whole episodes (pure torch, no Ray).

Rewards are never taken from the environment: the learner replaces every reward with the ones
made here, from the canvases and the *current* discriminator (``spiral.rllib.learner``). Keeping
the arithmetic here, apart from RLlib, lets it be read and tested on small tensors.

Batch layout: every (B, T) tensor holds one episode per row, T = episode_length + 1, because
RLlib appends the final observation as an extra, loss-masked step. Step t holds the canvas
*before* action t, so the canvas after action t is at step t + 1 (``next_step``). ``mask`` is 1
where the loss looks, ``terminated`` 1 at each episode's last action.

Learner reward modes (``RewardSettings.mode``):

- ``final``: ``r_t = D(c_{t+1})`` at the last action, 0 elsewhere (SPIRAL);
- ``temporal``: ``r_t = D(c_{t+1}) - D(c_t)``, the same sum with credit where it was earned
  (SPIRAL++);
- ``l2``: ``r_t = l2(c_t) - l2(c_{t+1})``, the decrease of the squared distance to the target
  (the L2 baseline, the learner's version of the environment's ``l2-step``);
- ``mix``: ``temporal`` times ``discriminator_weight`` plus ``l2`` times ``l2_weight``;

minus the optional stroke and blank-canvas penalties.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from envs import mse
from envs.actions import PAINT
from spiral.discriminator import complement_pairs, reward_scores, to_input
from spiral.experiment import DISCRIMINATOR_MODES, L2_MODES, RewardSettings


def next_step(values: Tensor) -> Tensor:
    """``values[:, t + 1]`` at step t; the last step, which the loss masks, gets a copy of itself."""
    return torch.cat([values[:, 1:], values[:, -1:]], dim=1)


def final_canvas_steps(terminated: Tensor) -> Tensor:
    """A (B, T) bool mask of the steps that hold a final canvas: those right after a last action."""
    return torch.cat([torch.zeros_like(terminated[:, :1]), terminated[:, :-1]], dim=1).bool()


def final_rewards(scores: Tensor, terminated: Tensor) -> Tensor:
    """SPIRAL's reward: the score of the final canvas, given to the last action only."""
    return next_step(scores) * terminated


def temporal_rewards(scores: Tensor, mask: Tensor) -> Tensor:
    """SPIRAL++'s temporal credit: how much each action changed the score, ``D(c_{t+1}) - D(c_t)``.

    The rewards of an episode add up to ``D(final) - D(blank)``: the same objective as
    ``final_rewards`` up to a constant, with each stroke credited for its own effect.
    """
    return (next_step(scores) - scores) * mask


def squared_errors(canvases: Tensor, targets: Tensor) -> Tensor:
    """(B, T) mean squared errors between uint8 canvases and targets, pixels in [0, 1].

    The environment's own ``envs.mse``, so the learner's L2 is the ``info["l2"]`` of the
    environment and the L2 of ``spiral.evaluation``: the batch is converted to numpy once and
    the errors come back as float32 on the canvases' device.
    """
    errors = mse(canvases.detach().cpu().numpy(), targets.detach().cpu().numpy())
    return torch.from_numpy(errors).to(device=canvases.device, dtype=torch.float32)


def l2_rewards(errors: Tensor, mask: Tensor) -> Tensor:
    """The L2 baseline's reward: how much each action brought the canvas closer to the target."""
    return (errors - next_step(errors)) * mask


def painted_strokes(actions: Tensor, use_flag: bool) -> Tensor:
    """(B, T) 1.0 where the action painted; without a flag in the action space every stroke paints.

    The flag, when there is one, is the first action component (``envs.actions``).
    """
    if not use_flag:
        return torch.ones(actions.shape[:2], device=actions.device)
    return (actions[..., 0] == PAINT).float()


def stroke_penalties(painted: Tensor, mask: Tensor, penalty: float) -> Tensor:
    """``penalty`` for every painted stroke (SPIRAL used a small one, to discourage scribbling)."""
    return penalty * painted * mask


def blank_penalties(canvases: Tensor, terminated: Tensor, penalty: float) -> Tensor:
    """``penalty`` at the last action of an episode whose final canvas has a single colour.

    Against the "never paint" collapse: where random strokes score worse than a blank canvas, a
    policy can settle on painting nothing before it has learned where to paint.
    """
    blank = next_step(canvases.flatten(2).float().std(-1)) == 0
    return penalty * blank.float() * terminated


class RunningScale:
    """A running estimate of the spread of raw rewards, to divide them by (``normalize``).

    A WGAN critic's scale drifts without bound, and so would the rewards and the value loss:
    dividing by an exponential average (factor ``decay``) of the standard deviation over the
    unmasked steps keeps them near unit spread. The first batch sets the estimate; the divisor
    never falls below ``floor``, so a batch of equal values does not blow up.
    """

    def __init__(self, decay: float = 0.99, floor: float = 1e-3) -> None:
        self.decay, self.floor = decay, floor
        self.value: float | None = None

    def update(self, values: Tensor, mask: Tensor) -> float:
        """Fold in the spread of ``values`` where ``mask`` is set, and return the divisor."""
        spread = values[mask.bool()].std().item() if mask.sum() > 1 else 1.0
        self.value = spread if self.value is None else self.decay * self.value + (1 - self.decay) * spread
        return max(self.value, self.floor)


def discriminator_scores(
    discriminator: nn.Module,
    canvases: Tensor,
    targets: Tensor | None,
    *,
    kind: str,
    complement: bool,
    generator: torch.Generator,
) -> Tensor:
    """The discriminator's reward score of every step's canvas: (B, T, H, W, 3) uint8 -> (B, T).

    ``targets`` are the conditions of a conditional discriminator (None for an unconditional
    one). With ``complement`` the discriminator judges the painted half of each canvas against
    the rest of its target, with a fresh half mask per step drawn from ``generator``. ``kind``
    is the discriminator's loss, which decides what its scores mean as rewards (``reward_scores``).
    """
    batch, steps = canvases.shape[:2]
    pictures = to_input(canvases.flatten(0, 1))
    conditions = None if targets is None else to_input(targets.flatten(0, 1))
    if complement:
        _, _, pictures, conditions = complement_pairs(conditions, pictures, generator)
    return reward_scores(discriminator, pictures, conditions, kind=kind).view(batch, steps)


def policy_rewards(
    settings: RewardSettings,
    *,
    canvases: Tensor,
    targets: Tensor | None,
    painted: Tensor,
    mask: Tensor,
    terminated: Tensor,
    scores: Tensor | None,
    scale: RunningScale,
) -> Tensor:
    """(B, T) rewards of ``settings.mode`` with its penalties, zero on masked steps.

    ``scores`` are the discriminator's (``discriminator_scores``), needed by the modes in
    ``DISCRIMINATOR_MODES``; ``targets`` are needed by ``L2_MODES``. With ``normalize`` the
    discriminator's scores (or, in ``l2`` mode, the squared errors) are divided by ``scale``,
    which this call updates.
    """
    rewards = torch.zeros_like(mask)
    if settings.mode in DISCRIMINATOR_MODES:
        if scores is None:
            raise ValueError(f"reward.mode={settings.mode!r} needs the discriminator's scores")
        if settings.normalize:
            scores = scores / scale.update(scores, mask)
        credit = final_rewards(scores, terminated) if settings.mode == "final" else temporal_rewards(scores, mask)
        rewards = rewards + settings.discriminator_weight * credit
    if settings.mode in L2_MODES:
        if targets is None:
            raise ValueError(f"reward.mode={settings.mode!r} compares with targets: none were given")
        errors = squared_errors(canvases, targets)
        if settings.normalize and settings.mode == "l2":
            errors = errors / scale.update(errors, mask)
        weight = settings.l2_weight if settings.mode == "mix" else 1.0
        rewards = rewards + weight * l2_rewards(errors, mask)
    if settings.stroke_penalty:
        rewards = rewards - stroke_penalties(painted, mask, settings.stroke_penalty)
    if settings.blank_penalty:
        rewards = rewards - blank_penalties(canvases, terminated, settings.blank_penalty)
    return rewards
