"""The discriminator that judges canvases, its losses, and the data it is trained on.

SPIRAL (Ganin et al. 2018) trains a painting policy against a discriminator: the discriminator
learns to tell real images from the agent's canvases, and the policy is rewarded with the
discriminator's score. This module holds everything on the discriminator's side, in pure torch:

- ``Discriminator``: a small strided conv net from a canvas (or a target/canvas pair) to a score.
- ``wgan_gp_loss`` (SPIRAL) and ``nonsaturating_loss`` (SPIRAL++, Mellor et al. 2019, used with
  spectral normalisation), chosen by name through ``discriminator_loss``.
- ``reward_scores``: the score the policy is rewarded with, matched to the loss.
- ``conditional_pairs`` and ``complement_pairs``: what "real" and "fake" mean when the agent
  reconstructs a target.
- ``FakeReplay``: recent generated canvases, so the discriminator does not forget old fakes.

Images travel as float NCHW tensors in [0, 1]; ``to_input`` makes them from the environment's
uint8 NHWC canvases.
"""

from __future__ import annotations

import collections
import enum

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as with_spectral_norm

Tensor = torch.Tensor
Stats = dict[str, float]


def to_input(images_uint8_nhwc: Tensor) -> Tensor:
    """uint8 (B, H, W, C) canvases, as the environment returns them, to float (B, C, H, W) in [0, 1]."""
    if images_uint8_nhwc.dtype != torch.uint8 or images_uint8_nhwc.dim() != 4:
        raise ValueError(
            f"expected uint8 images of shape (B, H, W, C), got {images_uint8_nhwc.dtype} "
            f"of shape {tuple(images_uint8_nhwc.shape)}"
        )
    return images_uint8_nhwc.permute(0, 3, 1, 2).float() / 255.0


class Discriminator(nn.Module):
    """A conv net from a canvas (and, in conditional mode, its target) to one raw score.

    As in SPIRAL: 4x4 convolutions of stride 2 with leaky ReLUs halve the image until it is 4x4,
    doubling the channels from ``width`` (capped at 8 * ``width``), then a linear layer gives the
    score. There is no batch normalisation: the WGAN gradient penalty is taken per sample, and
    batch statistics would couple the samples of a batch.

    In conditional mode the network sees the target and the canvas stacked on channels, so it
    can judge whether the canvas reproduces *this* target rather than whether it looks real.
    ``spectral_norm=True`` scales every layer to a spectral norm of about 1 (SPIRAL++): a
    Lipschitz bound that keeps a non-saturating discriminator smooth, so that its scores change
    gradually with the canvas and stay useful as rewards.
    """

    def __init__(
        self,
        in_channels: int = 3,
        size: int = 64,
        width: int = 32,
        conditional: bool = False,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if size < 16 or size & (size - 1):
            raise ValueError(f"Discriminator size must be a power of two >= 16, got {size}")
        self.in_channels = in_channels
        self.size = size
        self.conditional = conditional
        wrap = with_spectral_norm if spectral_norm else (lambda layer: layer)

        layers: list[nn.Module] = []
        channels = 2 * in_channels if conditional else in_channels
        resolution = size
        while resolution > 4:
            out_channels = min(width * 2 ** (len(layers) // 2), 8 * width)
            layers += [wrap(nn.Conv2d(channels, out_channels, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            channels, resolution = out_channels, resolution // 2
        self.convs = nn.Sequential(*layers)
        self.score = wrap(nn.Linear(channels * 4 * 4, 1))

    def forward(self, canvas: Tensor, target: Tensor | None = None) -> Tensor:
        """Scores of shape (B,) for float (B, C, H, W) canvases in [0, 1]: logits or critic values."""
        shape = tuple(canvas.shape)
        if shape[1:] != (self.in_channels, self.size, self.size):
            needed = f"(B, {self.in_channels}, {self.size}, {self.size})"
            raise ValueError(f"expected canvases of shape {needed}, got {shape}")
        if self.conditional:
            if target is None or target.shape != canvas.shape:
                got = None if target is None else tuple(target.shape)
                raise ValueError(f"a conditional Discriminator needs a target of the canvas's shape {shape}, got {got}")
            canvas = torch.cat([target, canvas], dim=1)
        elif target is not None:
            raise ValueError("this Discriminator is unconditional: it takes no target")
        features = self.convs(canvas * 2.0 - 1.0)  # centred on 0, as GAN discriminators usually see images
        return self.score(features.flatten(1)).squeeze(1)


def _uniform(batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """One uniform number per sample, drawn on the generator's device so a CPU seed works for GPU data."""
    return torch.rand(batch, generator=generator, device=generator.device).to(device)


def _check_batches(real: Tensor, fake: Tensor) -> None:
    if real.shape != fake.shape:
        shapes = f"{tuple(real.shape)} and {tuple(fake.shape)}"
        raise ValueError(f"real and fake batches must have the same shape, got {shapes}")


def wgan_gp_loss(
    disc: nn.Module,
    real: Tensor,
    fake: Tensor,
    real_target: Tensor | None = None,
    fake_target: Tensor | None = None,
    gp_weight: float = 10.0,
    *,
    generator: torch.Generator,
) -> tuple[Tensor, Stats]:
    """The WGAN-GP critic loss (Gulrajani et al. 2017), as SPIRAL trains its discriminator.

    ``E[D(fake)] - E[D(real)] + gp_weight * E[(|grad D(x_hat)| - 1)^2]``, where ``x_hat`` lies at
    a random point between a real and a fake canvas: the critic estimates the Wasserstein
    distance only if it is 1-Lipschitz, and the penalty enforces that softly where it matters,
    between the two distributions. In conditional mode only the canvas is interpolated and the
    gradient is taken with respect to it: the target is the condition, not the sample. Both pair
    constructions below give real and fake the same targets, so ``real_target`` is used for it.
    The interpolation points come from ``generator`` (required: with the global RNG a seeded
    run would not repeat its discriminator updates).

    Returns the loss and ``d_real``, ``d_fake``, ``gradient_penalty`` (unweighted) and
    ``wasserstein`` (``d_real - d_fake``, the critic's distance estimate) for logging.
    """
    _check_batches(real, fake)
    d_real = disc(real, real_target)
    d_fake = disc(fake, fake_target)

    alpha = _uniform(real.shape[0], generator, real.device).view(-1, 1, 1, 1)
    between = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (gradient,) = torch.autograd.grad(disc(between, real_target).sum(), between, create_graph=True)
    gradient_penalty = ((gradient.flatten(1).norm(dim=1) - 1) ** 2).mean()

    loss = d_fake.mean() - d_real.mean() + gp_weight * gradient_penalty
    stats = {
        "d_real": d_real.mean().item(),
        "d_fake": d_fake.mean().item(),
        "gradient_penalty": gradient_penalty.item(),
        "wasserstein": (d_real.mean() - d_fake.mean()).item(),
    }
    return loss, stats


def nonsaturating_loss(
    disc: nn.Module,
    real: Tensor,
    fake: Tensor,
    real_target: Tensor | None = None,
    fake_target: Tensor | None = None,
) -> tuple[Tensor, Stats]:
    """The standard GAN discriminator loss, ``softplus(-D(real)) + softplus(D(fake))``.

    That is the binary cross-entropy of the logits ``D`` with real = 1 and fake = 0. SPIRAL++
    trains its discriminator this way, with spectral normalisation in place of a gradient
    penalty to keep it smooth. ("Non-saturating" names the generator's side of the game; see
    ``reward_scores``.) Returns the loss and the mean logits ``d_real`` and ``d_fake``.
    """
    _check_batches(real, fake)
    d_real = disc(real, real_target)
    d_fake = disc(fake, fake_target)
    loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    return loss, {"d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}


class DiscriminatorLoss(str, enum.Enum):
    """How the discriminator is trained, and so what its scores mean as rewards."""

    WGAN_GP = "wgan-gp"
    NONSATURATING = "nonsaturating"


def discriminator_loss(
    kind: DiscriminatorLoss | str,
    disc: nn.Module,
    real: Tensor,
    fake: Tensor,
    real_target: Tensor | None = None,
    fake_target: Tensor | None = None,
    **options: float | torch.Generator | None,
) -> tuple[Tensor, Stats]:
    """The loss named by ``kind``, ``"wgan-gp"`` or ``"nonsaturating"``; ``options`` go to that loss.

    One switch, so that a config string picks the loss here and the matching reward in ``reward_scores``.
    """
    losses = {DiscriminatorLoss.WGAN_GP: wgan_gp_loss, DiscriminatorLoss.NONSATURATING: nonsaturating_loss}
    return losses[DiscriminatorLoss(kind)](disc, real, fake, real_target, fake_target, **options)


def reward_scores(
    disc: nn.Module, canvases: Tensor, targets: Tensor | None = None, *, kind: DiscriminatorLoss | str
) -> Tensor:
    """The policy's reward for each canvas, shape (B,), from a discriminator trained with ``kind``.

    - WGAN-GP: the critic value ``D(x)`` itself. The generator of a WGAN minimises
      ``-E[D(G(z))]``, so ``D`` is already the quantity to maximise; its offset is arbitrary,
      which the policy's value baseline absorbs.
    - Non-saturating GAN: ``log sigmoid(D(x)) = -softplus(-D(x))``, the log-probability the
      discriminator gives the canvas of being real. Maximising it is the non-saturating
      generator objective ``-log D(G(z))``: its gradient stays large when the discriminator
      confidently rejects a canvas, which is exactly when a young policy needs signal (the
      saturating ``log(1 - D(G(z)))`` goes flat there). SPIRAL++ rewards its agents with it.

    The discriminator is run in eval mode (and put back as it was) so that computing rewards
    never advances spectral normalisation's power iteration: rewards change only the policy.
    """
    was_training = disc.training
    disc.eval()
    try:
        with torch.no_grad():
            scores = disc(canvases, targets)
    finally:
        disc.train(was_training)
    if DiscriminatorLoss(kind) is DiscriminatorLoss.NONSATURATING:
        return -F.softplus(-scores)
    return scores


def conditional_pairs(targets: Tensor, canvases: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Real and fake (canvas, target) pairs for a conditional discriminator (SPIRAL reconstruction).

    The real pair shows the target next to itself, a perfect reconstruction; the fake pair shows
    it next to the agent's canvas. Returns ``(real_canvas, real_target, fake_canvas, fake_target)``.
    """
    _check_batches(targets, canvases)
    return targets, targets, canvases, targets


def half_masks(batch: int, height: int, width: int, generator: torch.Generator) -> Tensor:
    """Random half-image masks of shape (B, 1, H, W): 1 on a random half, 0 on the other.

    Each sample independently picks one of four halves: top, bottom, left or right (for an odd
    side the "first" half is the smaller one). Axis-aligned halves always leave both parts a
    large, contiguous region, so the discriminator can judge how the canvas continues the
    target across a straight seam. Drawn on the generator's device.
    """
    rows = torch.arange(height, device=generator.device).view(1, height, 1)
    cols = torch.arange(width, device=generator.device).view(1, 1, width)
    choice = torch.randint(4, (batch, 1, 1), generator=generator, device=generator.device)
    top, left = rows < height // 2, cols < width // 2
    masks = torch.where(choice == 0, top, torch.where(choice == 1, ~top, torch.where(choice == 2, left, ~left)))
    return masks.unsqueeze(1).float()


def complement_pairs(
    targets: Tensor, canvases: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Real and fake pairs for SPIRAL++'s complement discriminator (a conditional ``Discriminator``).

    A random half mask ``m`` (see ``half_masks``) splits each image: the discriminator sees the
    target outside the mask, ``(1 - m) * target``, as its condition, and inside the mask either
    the target (real) or the agent's canvas (fake), ``m * canvas``. Unlike a conditional pair it
    never sees the target and the canvas at the same pixels, so it cannot simply compare them
    pixel by pixel: it has to judge whether the painted half continues the target's other half.
    Returns
    ``(real_canvas, real_target, fake_canvas, fake_target)``; both targets are the same tensor.
    """
    _check_batches(targets, canvases)
    batch, _, height, width = targets.shape
    masks = half_masks(batch, height, width, generator).to(device=targets.device, dtype=targets.dtype)
    shown_target = (1 - masks) * targets
    return masks * targets, shown_target, masks * canvases, shown_target


class FakeReplay:
    """The last ``capacity`` batches of generated canvases (and their targets), sampled uniformly.

    SPIRAL trains its discriminator on fakes drawn from a replay of the last 20 batches rather
    than the newest batch alone, so it keeps rejecting what the policy painted a little while
    ago and the policy cannot win by cycling back to old tricks. Canvases are kept as uint8 on
    the CPU (a quarter of float32's memory, and exactly what the environment produces), in any
    layout (usually the environment's (B, H, W, C)); ``sample`` returns them as stored, ready
    for ``to_input``.
    """

    def __init__(self, capacity: int = 20) -> None:
        self.batches: collections.deque[tuple[Tensor, Tensor | None]] = collections.deque(maxlen=capacity)

    def __len__(self) -> int:
        """The number of canvases stored (not batches)."""
        return sum(canvases.shape[0] for canvases, _ in self.batches)

    def add(self, canvases: Tensor, targets: Tensor | None = None) -> None:
        """Store a batch, evicting the oldest one when full; targets are given always or never."""
        for name, images in (("canvases", canvases), ("targets", targets)):
            if images is not None and images.dtype != torch.uint8:
                raise ValueError(f"FakeReplay stores uint8 images; got {name} of dtype {images.dtype}")
        if self.batches and (targets is None) != (self.batches[0][1] is None):
            raise ValueError("give targets with every batch or with none")
        if targets is not None and targets.shape != canvases.shape:
            raise ValueError(f"targets {tuple(targets.shape)} must match canvases {tuple(canvases.shape)}")
        stored_targets = None if targets is None else targets.detach().cpu().clone()
        self.batches.append((canvases.detach().cpu().clone(), stored_targets))

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """``batch_size`` stored canvases (and their targets), uniformly with replacement.

        With replacement, so a young replay holding fewer canvases than a batch still fills one.
        ``generator`` must be a CPU generator, where the replay lives.
        """
        if not self.batches:
            raise ValueError("FakeReplay is empty: add a batch before sampling")
        canvases = torch.cat([stored for stored, _ in self.batches])
        indices = torch.randint(canvases.shape[0], (batch_size,), generator=generator)
        if self.batches[0][1] is None:
            return canvases[indices], None
        targets = torch.cat([stored for _, stored in self.batches])
        return canvases[indices], targets[indices]


def replayed_loss(
    disc: nn.Module,
    replay: FakeReplay,
    canvases: Tensor,
    targets: Tensor | None,
    *,
    kind: DiscriminatorLoss | str,
    gp_weight: float,
    complement: bool,
    real_images: Tensor | None,
    generator: torch.Generator,
) -> tuple[Tensor, Stats]:
    """The discriminator's loss for one batch of final canvases, as SPIRAL's learner trains it.

    The uint8 (B, H, W, C) ``canvases`` join ``replay``, and as many recent fakes are drawn from it.
    The real side: each fake's own target in conditional mode (``targets`` given; with
    ``complement``, the other half of it, ``complement_pairs``), otherwise random ``real_images``
    (uint8, the training set). Runs on ``canvases``' device; ``generator`` is a CPU generator.
    """
    replay.add(canvases, targets)
    count, device = canvases.shape[0], canvases.device
    fake, fake_target = replay.sample(count, generator)
    fake = to_input(fake.to(device))
    if targets is not None and complement:
        real, real_target, fake, fake_target = complement_pairs(to_input(fake_target.to(device)), fake, generator)
    elif targets is not None:
        real, real_target, fake, fake_target = conditional_pairs(to_input(fake_target.to(device)), fake)
    elif real_images is None:
        raise ValueError("an unconditional discriminator needs real_images to compare the fakes with")
    else:
        index = torch.randint(len(real_images), (count,), generator=generator)
        real, real_target = to_input(real_images[index].to(device)), None
    options = {"gp_weight": gp_weight, "generator": generator} if DiscriminatorLoss(kind) == DiscriminatorLoss.WGAN_GP else {}
    return discriminator_loss(kind, disc, real, fake, real_target, fake_target, **options)
