"""The discriminator, its losses, pairs and replay: real torch, real training, no mocks."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from spiral.discriminator import (
    Discriminator,
    DiscriminatorLoss,
    FakeReplay,
    complement_pairs,
    conditional_pairs,
    discriminator_loss,
    half_masks,
    nonsaturating_loss,
    replayed_loss,
    reward_scores,
    to_input,
    wgan_gp_loss,
)


@pytest.fixture(autouse=True)
def one_thread():
    """These nets are tiny: one thread is fastest, and a second one stalls whenever the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def squares(batch: int, generator: torch.Generator, size: int = 32) -> torch.Tensor:
    """White squares of random side and place on black: an easy "real" distribution."""
    images = torch.zeros(batch, 3, size, size)
    sides = torch.randint(6, 14, (batch,), generator=generator)
    tops, lefts = torch.randint(0, size - 14, (2, batch), generator=generator)
    for image, side, top, left in zip(images, sides, tops, lefts):
        image[:, top : top + side, left : left + side] = 1.0
    return images


class LinearCritic(nn.Module):
    """D(canvas, target) = w . canvas + v . target, with |w| = canvas_norm: its gradient in the canvas is known."""

    def __init__(self, direction: torch.Tensor, canvas_norm: float, target_weight: float = 0.0) -> None:
        super().__init__()
        self.w = canvas_norm * direction / direction.norm()
        self.v = target_weight * torch.ones_like(direction)

    def forward(self, canvas: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        score = (canvas * self.w).flatten(1).sum(1)
        return score if target is None else score + (target * self.v).flatten(1).sum(1)


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("conditional", [False, True])
def test_scores_have_one_value_per_image(size, conditional):
    disc = Discriminator(size=size, width=8, conditional=conditional)
    canvas = torch.rand(5, 3, size, size)
    scores = disc(canvas, torch.rand_like(canvas) if conditional else None)
    assert scores.shape == (5,) and scores.dtype == torch.float32


@pytest.mark.parametrize("size", [8, 48, 0, 100])
def test_a_size_that_is_not_a_power_of_two_from_16_is_refused(size):
    with pytest.raises(ValueError, match="power of two >= 16"):
        Discriminator(size=size)


def test_inputs_of_the_wrong_shape_or_mode_are_refused_with_the_shape_needed():
    canvas = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        Discriminator(size=32)(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="needs a target"):
        Discriminator(size=32, conditional=True)(canvas)
    with pytest.raises(ValueError, match="unconditional"):
        Discriminator(size=32)(canvas, canvas)


def test_to_input_turns_uint8_nhwc_canvases_into_float_nchw_in_unit_range():
    images = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    inputs = to_input(images)
    assert inputs.shape == (2, 3, 16, 16) and inputs.dtype == torch.float32
    assert torch.equal(inputs[1, 2, 5, 7], images[1, 5, 7, 2].float() / 255)
    assert inputs.min() >= 0 and inputs.max() <= 1
    with pytest.raises(ValueError, match="uint8"):
        to_input(images.float())


def test_the_gradient_penalty_vanishes_for_a_unit_gradient_critic_and_grows_quadratically_off_it():
    generator = torch.Generator().manual_seed(0)
    real, fake = squares(8, generator), torch.zeros(8, 3, 32, 32)
    direction = (real - fake).mean(0)
    _, unit = wgan_gp_loss(LinearCritic(direction, 1.0), real, fake, generator=generator)
    _, steep = wgan_gp_loss(LinearCritic(direction, 3.0), real, fake, generator=generator)
    assert unit["gradient_penalty"] == pytest.approx(0.0, abs=1e-8)
    assert steep["gradient_penalty"] == pytest.approx((3.0 - 1.0) ** 2, rel=1e-4)


def test_the_wasserstein_estimate_is_the_critic_gap_with_the_sign_of_who_scores_higher():
    generator = torch.Generator().manual_seed(1)
    real, fake = squares(8, generator), torch.zeros(8, 3, 32, 32)
    critic = LinearCritic((real - fake).mean(0), 3.0)
    loss, stats = wgan_gp_loss(critic, real, fake, gp_weight=0.0, generator=generator)
    assert stats["wasserstein"] == pytest.approx(stats["d_real"] - stats["d_fake"]) and stats["wasserstein"] > 0
    assert loss.item() == pytest.approx(-stats["wasserstein"], rel=1e-5)  # gp_weight 0: no penalty in the loss
    assert wgan_gp_loss(critic, fake, real, generator=generator)[1]["wasserstein"] < 0


def test_the_conditional_gradient_penalty_differentiates_the_canvas_only_and_keeps_the_target():
    generator = torch.Generator().manual_seed(2)
    targets = squares(8, generator)
    real_canvas, real_target, fake_canvas, fake_target = conditional_pairs(targets, torch.zeros_like(targets))
    critic = LinearCritic(torch.rand(3, 32, 32, generator=generator), 1.0, target_weight=5.0)
    _, stats = wgan_gp_loss(critic, real_canvas, fake_canvas, real_target, fake_target, generator=generator)
    assert stats["gradient_penalty"] == pytest.approx(0.0, abs=1e-8)


def test_the_penalty_of_a_real_discriminator_is_non_negative_and_weighted_into_the_loss():
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    real, fake = squares(8, generator), torch.rand(8, 3, 32, 32, generator=generator)
    loss, stats = wgan_gp_loss(Discriminator(size=32, width=8), real, fake, gp_weight=10.0, generator=generator)
    assert stats["gradient_penalty"] >= 0
    assert loss.item() == pytest.approx(-stats["wasserstein"] + 10.0 * stats["gradient_penalty"], rel=1e-4, abs=1e-5)


def test_the_gradient_penalty_repeats_under_a_seed_whatever_the_global_rng_does():
    """Two discriminators built from one seed, with generators of one seed, give the same GP losses."""

    def penalty_losses(seed: int, global_seed: int) -> list[float]:
        torch.manual_seed(0)
        disc = Discriminator(size=16, width=8)
        generator = torch.Generator().manual_seed(seed)
        real, fake = squares(4, generator, size=16), torch.rand(4, 3, 16, 16, generator=generator)
        torch.manual_seed(global_seed)  # what the rest of a process may have done to the global RNG
        return [wgan_gp_loss(disc, real, fake, generator=generator)[1]["gradient_penalty"] for _ in range(3)]

    first = penalty_losses(seed=11, global_seed=1)
    assert penalty_losses(seed=11, global_seed=2) == first
    assert penalty_losses(seed=12, global_seed=1) != first
    assert len(set(first)) == 3  # each call draws fresh interpolation points from the generator


def test_spectral_norm_wraps_every_layer_and_brings_its_largest_singular_value_to_one():
    torch.manual_seed(4)
    disc = Discriminator(size=32, width=16, spectral_norm=True)
    layers = [module for module in disc.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 4 and all(parametrize.is_parametrized(layer, "weight") for layer in layers)
    with torch.no_grad():
        for _ in range(30):  # each training-mode forward pass runs one power iteration
            disc(torch.rand(4, 3, 32, 32))
    for layer in layers:
        assert torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2).item() == pytest.approx(1.0, abs=1e-2)


def train(disc: Discriminator, kind: str, make_batch, generator: torch.Generator,
          steps: int = 120) -> list[tuple[float, float]]:
    """Adam steps on ``make_batch() -> (real, fake[, real_target, fake_target])``; (loss, d_real - d_fake) per step."""
    optimizer = torch.optim.Adam(disc.parameters(), lr=3e-4, betas=(0.5, 0.999))
    options = {"generator": generator} if kind == "wgan-gp" else {}
    history = []
    for _ in range(steps):
        loss, stats = discriminator_loss(kind, disc, *make_batch(), **options)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), stats["d_real"] - stats["d_fake"]))
    return history


def mean_over(history: list[tuple[float, float]], steps: slice) -> tuple[float, float]:
    window = history[steps]
    return sum(loss for loss, _ in window) / len(window), sum(gap for _, gap in window) / len(window)


@pytest.mark.parametrize(("kind", "spectral_norm"), [("wgan-gp", False), ("nonsaturating", True)])
def test_a_short_training_run_learns_to_tell_squares_from_blank_and_noise(kind, spectral_norm):
    torch.manual_seed(5)
    generator = torch.Generator().manual_seed(5)

    def make_batch():
        blank_or_noise = torch.randint(0, 2, (16, 1, 1, 1), generator=generator)
        return squares(16, generator), torch.rand(16, 3, 32, 32, generator=generator) * blank_or_noise

    history = train(Discriminator(size=32, width=16, spectral_norm=spectral_norm), kind, make_batch, generator)
    first_loss, first_gap = mean_over(history, slice(0, 5))
    last_loss, last_gap = mean_over(history, slice(-10, None))
    assert abs(first_gap) < 0.5 and last_gap > 5.0, history[::20]
    if kind == "wgan-gp":
        assert last_loss < first_loss - 10.0, history[::20]
    else:
        assert first_loss > 1.0 and last_loss < 0.25, history[::20]  # from about 2 log 2, chance


def test_a_conditional_discriminator_learns_whether_the_canvas_matches_its_target():
    """Fakes are squares too, only not the target's square: nothing but the condition tells them apart."""
    torch.manual_seed(6)
    generator = torch.Generator().manual_seed(6)

    def make_batch():
        targets, other_squares = squares(16, generator), squares(16, generator)
        real_canvas, real_target, fake_canvas, fake_target = conditional_pairs(targets, other_squares)
        return real_canvas, fake_canvas, real_target, fake_target

    history = train(Discriminator(size=32, width=16, conditional=True), "wgan-gp", make_batch, generator, steps=150)
    first_loss, _ = mean_over(history, slice(0, 5))
    last_loss, last_gap = mean_over(history, slice(-10, None))
    assert last_gap > 10.0 and last_loss < first_loss - 10.0, history[::20]


def test_rewards_are_the_critic_value_or_the_log_probability_of_real_and_leave_the_discriminator_alone():
    torch.manual_seed(7)
    disc = Discriminator(size=16, width=8, spectral_norm=True)
    canvases = torch.rand(6, 3, 16, 16)
    before = {name: buffer.clone() for name, buffer in disc.named_buffers()}
    wgan = reward_scores(disc, canvases, kind="wgan-gp")
    nonsaturating = reward_scores(disc, canvases, kind=DiscriminatorLoss.NONSATURATING)
    assert disc.training and all(torch.equal(buffer, before[name]) for name, buffer in disc.named_buffers())
    disc.eval()
    assert torch.allclose(wgan, disc(canvases))
    assert torch.allclose(nonsaturating, torch.log(torch.sigmoid(disc(canvases))))
    assert (nonsaturating < 0).all() and not wgan.requires_grad


def test_the_loss_switch_names_both_losses_and_refuses_others():
    generator = torch.Generator().manual_seed(8)
    disc, real, fake = Discriminator(size=16, width=8), torch.rand(4, 3, 16, 16), torch.zeros(4, 3, 16, 16)
    expected = nonsaturating_loss(disc, real, fake)[0]
    assert torch.equal(discriminator_loss("nonsaturating", disc, real, fake)[0], expected)
    assert set(discriminator_loss(DiscriminatorLoss.WGAN_GP, disc, real, fake, generator=generator)[1]) == {
        "d_real", "d_fake", "gradient_penalty", "wasserstein"
    }
    with pytest.raises(ValueError, match="hinge"):
        discriminator_loss("hinge", disc, real, fake)


def test_conditional_pairs_put_the_target_beside_itself_or_beside_the_canvas():
    targets, canvases = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    real_canvas, real_target, fake_canvas, fake_target = conditional_pairs(targets, canvases)
    assert real_canvas is targets and real_target is targets and fake_canvas is canvases and fake_target is targets
    with pytest.raises(ValueError, match="same shape"):
        conditional_pairs(targets, canvases[:2])


def test_half_masks_split_each_image_into_two_complementary_axis_aligned_halves():
    masks = half_masks(64, 16, 16, torch.Generator().manual_seed(9))
    assert masks.shape == (64, 1, 16, 16)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert (masks.sum((1, 2, 3)) == 16 * 16 / 2).all()  # each half non-empty, and exactly half
    top, left = torch.zeros(16, 16), torch.zeros(16, 16)
    top[:8], left[:, :8] = 1, 1
    halves = torch.stack([top, 1 - top, left, 1 - left])
    kinds = [next(i for i, half in enumerate(halves) if torch.equal(mask[0], half)) for mask in masks]
    assert set(kinds) == {0, 1, 2, 3}


def test_complement_pairs_show_the_same_masked_target_and_the_target_or_canvas_in_the_other_half():
    targets, canvases = torch.rand(32, 3, 16, 16), torch.rand(32, 3, 16, 16)
    pairs = complement_pairs(targets, canvases, torch.Generator().manual_seed(10))
    real_canvas, real_target, fake_canvas, fake_target = pairs
    masks = half_masks(32, 16, 16, torch.Generator().manual_seed(10))  # the same draw
    assert all(pair.shape == targets.shape for pair in pairs)
    assert torch.equal(real_target, fake_target) and torch.equal(real_target, (1 - masks) * targets)
    assert torch.equal(real_canvas, masks * targets) and torch.equal(fake_canvas, masks * canvases)
    assert torch.allclose(real_canvas + real_target, targets)  # the real halves reassemble the target


def test_complement_pairs_are_deterministic_under_a_seed_and_vary_with_it():
    targets, canvases = torch.rand(16, 3, 16, 16), torch.rand(16, 3, 16, 16)

    def pairs(seed):
        return complement_pairs(targets, canvases, torch.Generator().manual_seed(seed))

    assert all(torch.equal(a, b) for a, b in zip(pairs(11), pairs(11)))
    assert not torch.equal(pairs(11)[0], pairs(12)[0])


def test_the_replay_keeps_only_the_last_batches_and_samples_them_as_uint8():
    replay = FakeReplay(capacity=3)
    for batch in range(5):
        canvases = torch.full((4, 16, 16, 3), batch, dtype=torch.uint8)
        replay.add(canvases, 255 - canvases)
    assert len(replay) == 3 * 4
    canvases, targets = replay.sample(50, torch.Generator().manual_seed(13))
    assert canvases.shape == targets.shape == (50, 16, 16, 3) and canvases.dtype == targets.dtype == torch.uint8
    assert set(canvases.unique().tolist()) == {2, 3, 4}  # batches 0 and 1 were evicted, all others drawn
    assert torch.equal(targets, 255 - canvases)  # each canvas comes with its own target
    again, _ = replay.sample(50, torch.Generator().manual_seed(13))
    assert torch.equal(canvases, again)


def test_the_replay_defaults_to_20_batches_and_refuses_mixed_or_float_batches():
    replay = FakeReplay()
    for _ in range(25):
        replay.add(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    assert len(replay) == 20 * 2
    canvases, targets = replay.sample(3, torch.Generator().manual_seed(14))
    assert canvases.shape == (3, 8, 8, 3) and targets is None
    with pytest.raises(ValueError, match="every batch or with none"):
        replay.add(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        replay.add(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="empty"):
        FakeReplay().sample(1, torch.Generator())


def test_the_replayed_loss_judges_replayed_fakes_against_their_targets_or_real_images():
    generator = torch.Generator().manual_seed(0)
    canvases = torch.zeros(4, 16, 16, 3, dtype=torch.uint8)
    targets = torch.full((4, 16, 16, 3), 255, dtype=torch.uint8)
    options = {"kind": "wgan-gp", "gp_weight": 10.0, "complement": False, "generator": generator}

    conditional, replay = Discriminator(size=16, width=4, conditional=True), FakeReplay(2)
    loss, stats = replayed_loss(conditional, replay, canvases, targets, real_images=None, **options)
    real, fake = to_input(targets), to_input(canvases)  # what conditional_pairs makes of one replayed batch
    expected = conditional(real, real).mean(), conditional(fake, real).mean()
    assert len(replay) == 4 and loss.requires_grad
    assert stats["d_real"] == pytest.approx(expected[0].item()) and stats["d_fake"] == pytest.approx(expected[1].item())

    unconditional = Discriminator(size=16, width=4)
    with pytest.raises(ValueError, match="real_images"):
        replayed_loss(unconditional, FakeReplay(2), canvases, None, real_images=None, **options)
    loss, stats = replayed_loss(unconditional, FakeReplay(2), canvases, None, real_images=targets, **options)
    assert stats["d_real"] == pytest.approx(unconditional(to_input(targets)).mean().item())
