"""What one learner update costs: policy and discriminator forward and backward, pure torch.

A batch of 64 episodes x 20 steps of 64x64 canvases (conditional, so targets too) goes through
the policy (teacher-forced heads, value, a V-trace-sized loss stand-in) and the discriminator
(WGAN-GP on 64 real vs 64 fake canvases), or through the policy alone, as in an L2-reward run,
whose learner does no discriminator work. Runs on the CPU, and on the GPU where there is one,
for the small CPU network and the SPIRAL-size network, and prints frames per second and the
GPU/CPU ratio. No Ray: this is the arithmetic the learner does.

    python benchmarks/learner_step.py [--episodes 64] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from envs import PaintConfig
from envs.actions import ActionCodec
from spiral.discriminator import Discriminator, wgan_gp_loss
from spiral.policy import NetworkConfig, PolicyNetwork


def batch(episodes: int, steps: int, codec: ActionCodec, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = lambda: torch.randint(0, 256, (episodes, steps, 64, 64, 3), dtype=torch.uint8, generator=generator)  # noqa: E731
    actions = torch.stack([torch.randint(0, int(n), (episodes, steps), generator=generator) for n in codec.nvec], -1)
    return {
        "canvas": images().to(device), "target": images().to(device), "prev_action": actions.to(device),
        "step": torch.rand(episodes, steps, 1, generator=generator).to(device), "actions": actions.to(device),
    }


def update(policy: PolicyNetwork, disc: Discriminator | None, data: dict[str, torch.Tensor], optimizers) -> None:
    """One update; ``disc=None`` is an L2-reward run, whose learner does no discriminator work."""
    observation = {key: data[key] for key in ("canvas", "target", "prev_action", "step")}
    features, _ = policy.features(observation, policy.initial_state(data["canvas"].shape[0]))
    logits = policy.teacher_forced_logits(features, data["actions"])
    logp, values = policy.log_prob(logits, data["actions"]), policy.value(features)
    policy_loss = -(logp * values.detach()).mean() + values.pow(2).mean() - policy.entropies(logits).sum(-1).mean()
    loss = policy_loss
    if disc is not None:
        final = data["canvas"][:, -1].permute(0, 3, 1, 2).float() / 255
        real = data["target"][:, -1].permute(0, 3, 1, 2).float() / 255
        loss = loss + wgan_gp_loss(disc, real, final, generator=torch.Generator().manual_seed(0))[0]
    for optimizer in optimizers:
        optimizer.zero_grad()
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def frames_per_second(network: NetworkConfig, device: torch.device, episodes: int, steps: int, repeats: int,
                      discriminator: bool = True) -> float:
    codec = ActionCodec(PaintConfig(canvas_size=64, grid_size=32))
    torch.manual_seed(0)
    policy = PolicyNetwork(codec.names, tuple(codec.nvec.tolist()), 32, True, network).to(device)
    disc = Discriminator(size=64, width=32).to(device) if discriminator else None
    optimizers = [torch.optim.Adam(policy.parameters())]
    if disc is not None:
        optimizers.append(torch.optim.Adam(disc.parameters(), betas=(0.5, 0.999)))
    data = batch(episodes, steps, codec, device)
    update(policy, disc, data, optimizers)  # warm-up: allocations, kernels
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        update(policy, disc, data, optimizers)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return episodes * steps / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"learner update, {args.episodes} x {args.steps} frames, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads" + (f", {torch.cuda.get_device_name()}" if len(devices) > 1 else ""))
    for name, network in (("small", NetworkConfig.small()), ("spiral", NetworkConfig.spiral())):
        for reward, discriminator in (("D reward", True), ("L2 reward", False)):
            rates = {device.type: frames_per_second(network, device, args.episodes, args.steps, args.repeats,
                                                    discriminator) for device in devices}
            line = "  ".join(f"{device}: {rate:8.0f} frames/s" for device, rate in rates.items())
            ratio = f"  gpu/cpu: {rates['cuda'] / rates['cpu']:.1f}x" if "cuda" in rates else "  (no GPU here)"
            print(f"{name:7s} {reward:9s} {line}{ratio}")


if __name__ == "__main__":
    main()
