"""What one learner update costs: policy and discriminator forward and backward, pure torch.

A preset's learner batch (``training.batch_episodes`` episodes of ``episode_length + 1`` rows,
as RLlib's IMPALA hands them over) goes through the policy (teacher-forced heads, value, a
V-trace-sized loss stand-in) and, in a discriminator-reward run, through the discriminator as the
learner uses it: a score for every canvas (the temporal rewards) and a WGAN-GP update on the
final canvases against their targets. An L2-reward run's learner does no discriminator work.

Each network is timed in three versions, interleaved in the same run so that the ratios hold
whatever else the machine is doing:

- ``before``: ``spiral/policy.py`` as it was at ``--baseline`` (default ``BASELINE``, the commit
  before #12's work: float32, NCHW), read from git history, with the same weights and batch;
- ``float32``: the network now (channels-last convolutions, the fine map's last layer without a
  concatenation, pooled resizing), ``training.precision = "float32"``;
- ``bfloat16``: the same under the learner's bf16 autocast (``training.precision = "bfloat16"``),
  where the device has bf16 arithmetic. The discriminator stays float32 in every version, as in
  the learner.

The preset's network and the SPIRAL-size network (``NetworkConfig.spiral()``) run on the CPU and,
where torch sees one, on the GPU; the GPU line's ratio is against the CPU's figure in the same
precision. Last, one ``spiral pretrain`` step of the preset's network (behaviour cloning: the teacher-forced
NLL of ``PretrainSettings.batch`` episodes) in float32 and bfloat16. ``--profile`` prints the torch
profiler's most expensive operations of one learner update instead.

    python benchmarks/learner_step.py [--preset mnist-pen] [--repeats 5] [--threads N] [--devices cpu cuda]
                                      [--baseline COMMIT_OR_FILE] [--profile]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import spiral.policy
from envs.actions import ActionCodec
from spiral.discriminator import Discriminator, to_input, wgan_gp_loss
from spiral.experiment import Experiment
from spiral.network_config import PRECISIONS, NetworkConfig
from spiral.policy import PolicyNetwork, autocast, bfloat16_supported
from spiral.pretrain import PretrainSettings, cloning_step

Batch = dict[str, torch.Tensor]
BASELINE = "7806db5"  # the last commit before the learner's speed work (#12)
REPO = Path(__file__).resolve().parent.parent


def learner_batch(experiment: Experiment, codec: ActionCodec, device: torch.device, episodes: int | None = None,
                  steps: int | None = None) -> Batch:
    """Random canvases, targets and actions of the shapes the learner receives, (B, T, ...): by default
    ``training.batch_episodes`` episodes of ``episode_length + 1`` rows, as RLlib hands them over."""
    paint = experiment.paint_config()
    episodes = episodes or experiment.training.batch_episodes
    steps = steps or paint.episode_length + 1
    generator = torch.Generator().manual_seed(0)

    def images() -> torch.Tensor:
        return torch.randint(0, 256, (episodes, steps, paint.height, paint.width, 3), dtype=torch.uint8,
                             generator=generator)

    actions = torch.stack([torch.randint(0, int(n), (episodes, steps), generator=generator) for n in codec.nvec], -1)
    batch = {"canvas": images(), "target": images(), "prev_action": actions, "actions": actions,
             "step": torch.randint(0, paint.episode_length, (episodes, steps, 1), generator=generator).float()}
    return {key: value.to(device) for key, value in batch.items()}


def update(policy: PolicyNetwork, disc: Discriminator | None, data: Batch, optimizers: list[torch.optim.Optimizer],
           precision: str = "float32") -> None:
    """One learner update; ``disc=None`` is an L2-reward run, whose learner does no discriminator work.

    The policy's pass runs in ``precision`` and hands float32 logits and values on, as
    ``PolicyNetwork.training_pass`` does for the learner (written out here, because the network
    before, which this also times, has no such method); the discriminator is float32.
    """
    observation = {key: data[key] for key in ("canvas", "target", "prev_action", "step")}
    with autocast(precision, data["canvas"].device):
        features, _ = policy.features(observation, policy.initial_state(data["canvas"].shape[0]))
        logits = policy.teacher_forced_logits(features, data["actions"])
    logits, features = logits.float(), features.float()
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


def policy_module_at(baseline: str) -> types.ModuleType:
    """``spiral/policy.py`` as it was at ``baseline``: a commit of this checkout's git history, or a
    file holding that version (for a copy of the tree without its history, such as a GPU machine's)."""
    if Path(baseline).is_file():
        origin, source = baseline, Path(baseline).read_text()
    else:
        origin = f"{baseline}:spiral/policy.py"
        try:
            source = subprocess.run(["git", "show", f"{baseline}:spiral/policy.py"], cwd=REPO, check=True,
                                    capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as error:
            detail = getattr(error, "stderr", "") or error
            sys.exit(f"learner_step.py: cannot read spiral/policy.py at {baseline} from git ({str(detail).strip()}); "
                     "the baseline needs a git clone with its history (not a shallow one), or --baseline naming "
                     f"a file that holds it (git show {BASELINE}:spiral/policy.py > FILE).")
    name = "".join(character if character.isalnum() else "_" for character in Path(baseline).name)
    module = types.ModuleType(f"policy_at_{name}")
    module.__file__ = origin
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def learner_update(experiment: Experiment, network: NetworkConfig, discriminator: bool, device: torch.device,
                   precision: str = "float32", policy_module: types.ModuleType = spiral.policy) -> Callable[[], None]:
    """A closure doing one update of fresh networks on one fixed batch, in ``precision``.

    ``policy_module`` is the module that defines the network: ``spiral.policy``, or an older
    version of it (``policy_module_at``), which gets the same weights and batch.
    """
    paint = experiment.paint_config()
    codec = ActionCodec(paint)
    torch.manual_seed(0)
    config = policy_module.NetworkConfig(**network.to_dict())
    policy = policy_module.PolicyNetwork(codec.names, tuple(codec.nvec.tolist()), paint.grid_size, True, config)
    policy = policy.to(device)
    disc = Discriminator(size=paint.width, width=experiment.discriminator.width, conditional=True).to(device) \
        if discriminator else None
    optimizers = [torch.optim.Adam(policy.parameters())]
    if disc is not None:
        optimizers.append(torch.optim.Adam(disc.parameters(), betas=(0.5, 0.999)))
    data = learner_batch(experiment, codec, device)
    return lambda: update(policy, disc, data, optimizers, precision)


def pretraining_update(experiment: Experiment, device: torch.device, precision: str) -> Callable[[], None]:
    """A closure doing one ``spiral pretrain`` step (``spiral.pretrain.cloning_step``) of the preset's network
    on a fixed batch of ``PretrainSettings.batch`` episodes of ``episode_length`` rows."""
    paint = experiment.paint_config()
    codec = ActionCodec(paint)
    conditional = experiment.reward.conditional
    torch.manual_seed(0)
    policy = PolicyNetwork(codec.names, tuple(codec.nvec.tolist()), paint.grid_size, conditional,
                           experiment.network_config()).to(device)
    settings = PretrainSettings(precision=precision)
    data = learner_batch(experiment, codec, device, settings.batch, paint.episode_length)
    observation = {key: data[key] for key in ("canvas", "prev_action", "step") + (("target",) if conditional else ())}
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings.lr)
    return lambda: cloning_step(policy, optimizer, observation, data["actions"], settings)


def frames_per_second(steps: dict[str, Callable[[], None]], device: torch.device, frames: int,
                      repeats: int) -> dict[str, float]:
    """Each version's best of ``repeats`` updates, the versions interleaved so that load hits all alike."""
    best = dict.fromkeys(steps, float("inf"))
    for step in steps.values():  # warm-up: allocations, kernels, oneDNN's primitive caches
        step()
    for _ in range(repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: frames / seconds for name, seconds in best.items()}


def print_profile(experiment: Experiment, precision: str, rows: int = 15) -> None:
    """The costliest operations of one discriminator-reward update of the preset's network."""
    step = learner_update(experiment, experiment.network_config(), True, torch.device("cpu"), precision)
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        step()
    print(profiler.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist-pen")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", default=BASELINE,
                        help="the git commit whose policy.py is 'before', or a file holding that policy.py")
    parser.add_argument("--profile", action="store_true", help="print the torch profiler's table and stop")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS,
                        help="the precision --profile runs in")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's, one per core)")
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"),
                        help="where to time the updates (default: the CPU, and the GPU where torch sees one); "
                             "the GPU's lines give their ratio to the CPU's only when both run")
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. training.batch_episodes=64")
    args = parser.parse_args()
    experiment = Experiment.from_preset(args.preset, args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        print_profile(experiment, args.precision)
        return
    before = policy_module_at(args.baseline)
    devices = [torch.device(name) for name in args.devices or ["cpu"] + ["cuda"] * torch.cuda.is_available()]
    if any(device.type == "cuda" for device in devices) and not torch.cuda.is_available():
        parser.error("--devices cuda: torch sees no GPU here")
    paint = experiment.paint_config()
    frames = experiment.training.batch_episodes * (paint.episode_length + 1)
    print(f"learner update of preset {args.preset}: {experiment.training.batch_episodes} episodes x "
          f"{paint.episode_length + 1} rows, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.device("cuda") in devices else ", no GPU")
          + f"; before = {args.baseline}")
    for name, network in ((args.preset, experiment.network_config()), ("spiral-size", NetworkConfig.spiral())):
        for reward, discriminator in (("D reward", True), ("L2 reward", False)):
            cpu_rates: dict[str, float] = {}
            for device in devices:
                steps = {"before": learner_update(experiment, network, discriminator, device, policy_module=before)}
                for precision in PRECISIONS:
                    if precision == "float32" or bfloat16_supported(device):
                        steps[precision] = learner_update(experiment, network, discriminator, device, precision)
                rates = frames_per_second(steps, device, frames, args.repeats)
                figures = "  ".join(f"{version} {rate:6.0f}" for version, rate in rates.items())
                ratios = "  ".join(f"{version}/before {rate / rates['before']:.2f}x"
                                   for version, rate in rates.items() if version != "before")
                print(f"{name:12s} {reward:9s} {device.type}: frames/s {figures}   {ratios}", flush=True)
                if device.type == "cpu":
                    cpu_rates = rates
                elif cpu_rates:
                    print_gpu_ratios(rates, cpu_rates)
    episodes, rows = PretrainSettings().batch, paint.episode_length
    cpu_rates = {}
    for device in devices:  # behaviour cloning: the same network, teacher-forced, no value or discriminator
        steps = {precision: pretraining_update(experiment, device, precision) for precision in PRECISIONS
                 if precision == "float32" or bfloat16_supported(device)}
        rates = frames_per_second(steps, device, episodes * rows, args.repeats)
        figures = "  ".join(f"{version} {rate:6.0f}" for version, rate in rates.items())
        ratio = f"   bfloat16/float32 {rates['bfloat16'] / rates['float32']:.2f}x" if "bfloat16" in rates else ""
        print(f"{'pretrain':12s} {'cloning':9s} {device.type}: frames/s {figures}{ratio}   "
              f"({episodes} episodes x {rows} rows)", flush=True)
        if device.type == "cpu":
            cpu_rates = rates
        elif cpu_rates:
            print_gpu_ratios(rates, cpu_rates)


def print_gpu_ratios(rates: dict[str, float], cpu_rates: dict[str, float]) -> None:
    print(f"{'':12s} {'':9s} gpu/cpu: " + "  ".join(
        f"{version} {rate / cpu_rates[version]:.1f}x" for version, rate in rates.items() if version in cpu_rates))


if __name__ == "__main__":
    main()
