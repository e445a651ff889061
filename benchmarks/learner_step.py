"""What one learner update costs: policy and discriminator forward and backward, pure torch.

A preset's learner batch (``training.batch_episodes`` episodes of ``episode_length + 1`` rows,
as RLlib's IMPALA hands them over) goes through the policy (teacher-forced heads, value, a
V-trace-sized loss stand-in) and, in a discriminator-reward run, through the discriminator as the
learner uses it: a score for every canvas (the temporal rewards) and a WGAN-GP update on the
final canvases against their targets. An L2-reward run's learner does no discriminator work.

Each network is timed in the layouts it can run in, in the same run, so the ratios hold whatever
else the machine is doing:

- ``nchw``: float32, contiguous tensors: the learner before channels-last (the baseline);
- ``channels-last``: float32, the spatial heads' convolutions on NHWC tensors
  (``spiral.policy.CONV_MEMORY_FORMAT``: what the learner and the env runners run now);
- ``bf16``: channels-last under bfloat16 autocast, where the device has bf16 arithmetic (not
  used in training: logits rounded to 8 bits would bias V-trace's importance ratios).

The preset's network and the SPIRAL-size network (``NetworkConfig.spiral()``) run on the CPU and,
where torch sees one, on the GPU; the GPU column's ratio is against the CPU's channels-last
figure. ``--profile`` prints the torch profiler's most expensive operations of one update instead.

    python benchmarks/learner_step.py [--preset mnist-pen] [--repeats 5] [--threads N] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile

import spiral.policy
from envs.actions import ActionCodec
from spiral.discriminator import Discriminator, to_input, wgan_gp_loss
from spiral.experiment import Experiment
from spiral.policy import NetworkConfig, PolicyNetwork

Batch = dict[str, torch.Tensor]


def learner_batch(experiment: Experiment, codec: ActionCodec, device: torch.device) -> Batch:
    """Random canvases, targets and actions of the shapes the learner receives: (B, T, ...)."""
    paint = experiment.paint_config()
    episodes, steps = experiment.training.batch_episodes, paint.episode_length + 1
    generator = torch.Generator().manual_seed(0)

    def images() -> torch.Tensor:
        return torch.randint(0, 256, (episodes, steps, paint.height, paint.width, 3), dtype=torch.uint8,
                             generator=generator)

    actions = torch.stack([torch.randint(0, int(n), (episodes, steps), generator=generator) for n in codec.nvec], -1)
    batch = {"canvas": images(), "target": images(), "prev_action": actions, "actions": actions,
             "step": torch.randint(0, paint.episode_length, (episodes, steps, 1), generator=generator).float()}
    return {key: value.to(device) for key, value in batch.items()}


def update(policy: PolicyNetwork, disc: Discriminator | None, data: Batch, optimizers: list[torch.optim.Optimizer]
           ) -> None:
    """One learner update; ``disc=None`` is an L2-reward run, whose learner does no discriminator work."""
    observation = {key: data[key] for key in ("canvas", "target", "prev_action", "step")}
    features, _ = policy.features(observation, policy.initial_state(data["canvas"].shape[0]))
    logits = policy.teacher_forced_logits(features, data["actions"])
    logp, values = policy.log_prob(logits, data["actions"]), policy.value(features)
    loss = -(logp * values.detach()).mean() + values.pow(2).mean() - policy.entropies(logits).sum(-1).mean()
    if disc is not None:
        with torch.no_grad():  # the temporal rewards: a score for every step's canvas
            disc(to_input(data["canvas"].flatten(0, 1)), to_input(data["target"].flatten(0, 1)))
        final, target = to_input(data["canvas"][:, -1]), to_input(data["target"][:, -1])
        loss = loss + wgan_gp_loss(disc, target, final, target, target, generator=torch.Generator().manual_seed(0))[0]
    for optimizer in optimizers:
        optimizer.zero_grad()
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


@contextlib.contextmanager
def layout(name: str, device: torch.device) -> Iterator[None]:
    """Run the networks in one of the layouts of the module docstring."""
    saved = spiral.policy.CONV_MEMORY_FORMAT
    spiral.policy.CONV_MEMORY_FORMAT = torch.contiguous_format if name == "nchw" else torch.channels_last
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=name == "bf16"):
            yield
    finally:
        spiral.policy.CONV_MEMORY_FORMAT = saved


def bf16_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def learner_update(experiment: Experiment, network: NetworkConfig, discriminator: bool, device: torch.device
                   ) -> Callable[[], None]:
    """A closure doing one update of fresh networks on one fixed batch."""
    paint = experiment.paint_config()
    codec = ActionCodec(paint)
    torch.manual_seed(0)
    policy = PolicyNetwork(codec.names, tuple(codec.nvec.tolist()), paint.grid_size, True, network).to(device)
    disc = Discriminator(size=paint.width, width=experiment.discriminator.width, conditional=True).to(device) \
        if discriminator else None
    optimizers = [torch.optim.Adam(policy.parameters())]
    if disc is not None:
        optimizers.append(torch.optim.Adam(disc.parameters(), betas=(0.5, 0.999)))
    data = learner_batch(experiment, codec, device)
    return lambda: update(policy, disc, data, optimizers)


def frames_per_second(experiment: Experiment, network: NetworkConfig, discriminator: bool, device: torch.device,
                      layouts: list[str], repeats: int) -> dict[str, float]:
    """Each layout's best of ``repeats`` updates, the layouts interleaved so that load hits all alike."""
    step = learner_update(experiment, network, discriminator, device)
    best = dict.fromkeys(layouts, float("inf"))
    for name in layouts:  # warm-up: allocations, kernels, oneDNN's primitive caches
        with layout(name, device):
            step()
    for _ in range(repeats):
        for name in layouts:
            with layout(name, device):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
    frames = experiment.training.batch_episodes * (experiment.paint_config().episode_length + 1)
    return {name: frames / seconds for name, seconds in best.items()}


def print_profile(experiment: Experiment, rows: int = 15) -> None:
    """The costliest operations of one discriminator-reward update of the preset's network."""
    step = learner_update(experiment, experiment.network_config(), True, torch.device("cpu"))
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        step()
    print(profiler.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist-pen")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print the torch profiler's table and stop")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's, one per core)")
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. training.batch_episodes=64")
    args = parser.parse_args()
    experiment = Experiment.from_preset(args.preset, args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        print_profile(experiment)
        return
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    paint = experiment.paint_config()
    print(f"learner update of preset {args.preset}: {experiment.training.batch_episodes} episodes x "
          f"{paint.episode_length + 1} rows, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if len(devices) > 1 else ", no GPU"))
    for name, network in ((args.preset, experiment.network_config()), ("spiral-size", NetworkConfig.spiral())):
        for reward, discriminator in (("D reward", True), ("L2 reward", False)):
            for device in devices:
                layouts = ["nchw", "channels-last"] + (["bf16"] if bf16_available(device) else [])
                rates = frames_per_second(experiment, network, discriminator, device, layouts, args.repeats)
                figures = "  ".join(f"{layout_name} {rate:6.0f}" for layout_name, rate in rates.items())
                ratios = "  ".join(f"{layout_name}/nchw {rate / rates['nchw']:.2f}x"
                                   for layout_name, rate in rates.items() if layout_name != "nchw")
                print(f"{name:12s} {reward:9s} {device.type}: frames/s {figures}   {ratios}", flush=True)
                if device.type == "cpu":
                    cpu_rate = rates["channels-last"]
                else:
                    print(f"{'':12s} {'':9s} gpu/cpu (channels-last): {rates['channels-last'] / cpu_rate:.1f}x")


if __name__ == "__main__":
    main()
