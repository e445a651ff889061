"""The policy's rewards (spiral.rewards) on small real tensors whose answers can be checked by hand; no Ray.

Layout as on the learner: one episode per row, one step per column, and an extra final column
(masked out of the loss) that holds the final canvas.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from envs.actions import MOVE, PAINT
from spiral.discriminator import Discriminator, complement_pairs, to_input
from spiral.experiment import LEARNER_REWARD_MODES, RewardSettings
from spiral.rewards import (
    RunningScale,
    blank_penalties,
    discriminator_scores,
    final_canvas_steps,
    final_rewards,
    l2_rewards,
    painted_strokes,
    policy_rewards,
    squared_errors,
    stroke_penalties,
    temporal_rewards,
)

# One episode of three strokes: four canvases, the last one final.
SCORES = torch.tensor([[0.5, 1.0, 2.0, 4.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
TERMINATED = torch.tensor([[0.0, 0.0, 1.0, 0.0]])


def close(values: torch.Tensor, expected: list[list[float]]) -> bool:
    """Equal up to float32 rounding."""
    return torch.allclose(values, torch.tensor(expected), rtol=1e-5, atol=1e-7)


def grey_canvases(levels: list[list[int]], size: int = 2) -> torch.Tensor:
    """(B, T, size, size, 3) uint8 canvases, each of one grey level."""
    return torch.tensor(levels, dtype=torch.uint8)[:, :, None, None, None].expand(-1, -1, size, size, 3).clone()


def test_final_canvas_steps_are_the_steps_right_after_the_last_action():
    assert final_canvas_steps(TERMINATED).tolist() == [[False, False, False, True]]


def test_the_final_reward_is_the_final_canvas_score_at_the_last_action():
    assert final_rewards(SCORES, TERMINATED).tolist() == [[0.0, 0.0, 4.0, 0.0]]


def test_temporal_rewards_credit_each_action_with_its_change_of_score_and_add_up_to_the_final_gain():
    rewards = temporal_rewards(SCORES, MASK)
    assert rewards.tolist() == [[0.5, 1.0, 2.0, 0.0]]
    assert rewards.sum().item() == 4.0 - 0.5  # D(final) - D(blank)


def test_squared_errors_are_the_mean_square_per_pixel_in_unit_range():
    canvases = grey_canvases([[0, 255], [51, 51]])
    targets = grey_canvases([[51, 51], [51, 0]])
    errors = squared_errors(canvases, targets)
    assert errors.dtype == torch.float32 and errors.shape == (2, 2)
    assert close(errors, [[0.04, 0.64], [0.0, 0.04]])


def test_l2_rewards_are_the_decrease_of_the_error_at_each_step():
    errors = torch.tensor([[0.64, 0.25, 0.04, 0.04]])
    assert close(l2_rewards(errors, MASK), [[0.39, 0.21, 0.0, 0.0]])


def test_a_stroke_is_painted_where_the_flag_says_so_or_always_without_a_flag():
    actions = torch.tensor([[[PAINT, 5], [MOVE, 5], [PAINT, 0], [MOVE, 0]]])
    assert painted_strokes(actions, use_flag=True).tolist() == [[1.0, 0.0, 1.0, 0.0]]
    assert painted_strokes(actions, use_flag=False).tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_the_stroke_penalty_charges_painted_strokes_the_loss_sees():
    painted = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    assert close(stroke_penalties(painted, MASK, 0.1), [[0.1, 0.0, 0.1, 0.0]])


def test_the_blank_penalty_charges_the_last_action_of_an_episode_that_left_the_canvas_one_colour():
    canvases = grey_canvases([[0, 0, 0], [0, 0, 0]], size=4)
    canvases[1, 2, 0, 0] = 255  # the second episode painted one pixel
    terminated = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert blank_penalties(canvases, terminated, 0.5).tolist() == [[0.0, 0.5, 0.0], [0.0, 0.0, 0.0]]


def test_the_running_scale_starts_at_the_first_spread_then_averages_slowly_and_never_reaches_zero():
    scale = RunningScale()
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert scale.update(torch.tensor([[1.0, 3.0, 100.0]]), mask) == pytest.approx(math.sqrt(2))  # masked 100 ignored
    assert scale.update(torch.tensor([[7.0, 7.0, 0.0]]), mask) == pytest.approx(0.99 * math.sqrt(2))
    one_step = torch.tensor([[1.0, 0.0, 0.0]])  # too few steps for a spread: counts as 1
    assert scale.update(torch.tensor([[5.0, 0.0, 0.0]]), one_step) == pytest.approx(0.99**2 * math.sqrt(2) + 0.01)
    assert RunningScale().update(torch.zeros(1, 3), mask) == 1e-3


@pytest.fixture
def canvases() -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_discriminator_scores_are_the_critic_values_or_log_probabilities_of_every_steps_canvas(canvases):
    torch.manual_seed(0)
    disc = Discriminator(size=16, width=4)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        raw = disc(to_input(canvases.flatten(0, 1))).view(2, 3)
    wgan = discriminator_scores(disc, canvases, None, kind="wgan-gp", complement=False, generator=generator)
    nonsaturating = discriminator_scores(disc, canvases, None, kind="nonsaturating", complement=False,
                                         generator=generator)
    assert torch.allclose(wgan, raw) and torch.allclose(nonsaturating, -F.softplus(-raw))


def test_conditional_and_complement_scores_judge_each_canvas_against_its_own_target(canvases):
    torch.manual_seed(1)
    disc = Discriminator(size=16, width=4, conditional=True)
    targets = canvases.flip(0)
    flat_canvases, flat_targets = to_input(canvases.flatten(0, 1)), to_input(targets.flatten(0, 1))
    with torch.no_grad():
        expected = disc(flat_canvases, flat_targets).view(2, 3)
        _, shown, painted, _ = complement_pairs(flat_targets, flat_canvases, torch.Generator().manual_seed(3))
        expected_complement = disc(painted, shown).view(2, 3)
    options = {"kind": "wgan-gp", "generator": torch.Generator().manual_seed(3)}
    assert torch.allclose(discriminator_scores(disc, canvases, targets, complement=False, **options), expected)
    complement = discriminator_scores(disc, canvases, targets, complement=True, **options)
    assert torch.allclose(complement, expected_complement) and not torch.allclose(complement, expected)


def settings(mode: str, **changes) -> RewardSettings:
    return RewardSettings(mode=mode, normalize=False, **changes)


def rewards_of(reward: RewardSettings, scores: torch.Tensor | None = SCORES, scale: RunningScale | None = None,
               canvases: torch.Tensor | None = None, targets: torch.Tensor | None = None,
               painted: torch.Tensor | None = None) -> torch.Tensor:
    """``policy_rewards`` on the episode above: blank-free grey canvases 0, 51, 102, 153 and a 153 target."""
    canvases = grey_canvases([[0, 51, 102, 153]]) if canvases is None else canvases
    return policy_rewards(
        reward, canvases=canvases, targets=grey_canvases([[153] * 4]) if targets is None else targets,
        painted=torch.zeros_like(MASK) if painted is None else painted, mask=MASK, terminated=TERMINATED,
        scores=scores, scale=scale or RunningScale(),
    )


def test_every_learner_mode_makes_its_rewards():
    assert set(LEARNER_REWARD_MODES) == {"final", "temporal", "l2", "mix"}
    assert rewards_of(settings("final", discriminator_weight=2.0)).tolist() == [[0.0, 0.0, 8.0, 0.0]]
    assert rewards_of(settings("temporal")).tolist() == [[0.5, 1.0, 2.0, 0.0]]
    # errors (0.6)^2, (0.4)^2, (0.2)^2, 0: each step brings the canvas 0.2 closer to the target
    assert close(rewards_of(settings("l2"), scores=None), [[0.2, 0.12, 0.04, 0.0]])
    mix = rewards_of(settings("mix", discriminator_weight=0.5, l2_weight=10.0))
    assert close(mix, [[0.25 + 2.0, 0.5 + 1.2, 1.0 + 0.4, 0.0]])


def test_normalizing_divides_the_discriminator_scores_or_the_l2_errors_by_the_running_scale():
    spread = torch.tensor([0.5, 1.0, 2.0]).std().item()  # of the scores the loss sees
    scale = RunningScale()
    temporal = rewards_of(RewardSettings(mode="temporal", normalize=True), scale=scale)
    assert scale.value == pytest.approx(spread)
    assert close(temporal, [[0.5 / spread, 1.0 / spread, 2.0 / spread, 0.0]])
    l2 = rewards_of(RewardSettings(mode="l2", normalize=True), scores=None)
    spread = torch.tensor([0.36, 0.16, 0.04]).std().item()
    assert close(l2, [[0.2 / spread, 0.12 / spread, 0.04 / spread, 0.0]])


def test_penalties_are_subtracted_from_the_mode_rewards():
    painted = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    blank = grey_canvases([[0, 0, 0, 0]], size=4)
    reward = settings("temporal", stroke_penalty=0.1, blank_penalty=3.0)
    assert close(rewards_of(reward, canvases=blank, painted=painted), [[0.4, 0.9, -1.0, 0.0]])


def test_a_mode_without_what_it_needs_says_so():
    with pytest.raises(ValueError, match="discriminator's scores"):
        rewards_of(settings("temporal"), scores=None)
    with pytest.raises(ValueError, match="compares with targets"):
        policy_rewards(settings("l2"), canvases=grey_canvases([[0] * 4]), targets=None, painted=MASK, mask=MASK,
                       terminated=TERMINATED, scores=None, scale=RunningScale())
