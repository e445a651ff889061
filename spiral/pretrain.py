"""Behaviour cloning of search demonstrations into the policy network, by teacher forcing.

The second stage of the learning pipeline (DESIGN.md): the policy should arrive at RL already
painting. Each demonstration (``spiral.demonstrations``) is replayed through ``PaintEnv``, with
the same settings and its training image as the target, which gives the observations the policy
would have seen; the network reads the whole episode from ``initial_state``, every autoregressive
head is fed the demonstrated choices of the heads before it (``teacher_forced_logits``), and the
loss is the negative log-likelihood of the demonstrated actions, summed over the action
components and averaged over the steps. Adam; a held-out part of the demonstrations measures the
same NLL on episodes never trained on.

A programs file (``spiral programs``: a reconstruction agent's paintings of training images)
serves as well: its strokes are turned back into actions and cloned into an unconditional
policy, which learns to paint such programs from scratch (the generator of issue #10, item 4;
Sketch-RNN's idea with a painting agent's strokes in place of human ones).

A run folder holds:

=====================  ==========================================================================
``pretrain.json``      the demonstrations file, its header, the settings and the held-out indices
                       (and the agent whose weights it started from, ``--init-from``)
``experiment.json``    the experiment the policy belongs to (the demonstrations', with the network
                       overrides): what ``scripts/ship_agent.sh`` ships and ``spiral train`` continues
``checkpoint/``        ``policy.pt``, ``optimizer.pt`` (``torch.save``'d state_dicts) and
                       ``state.json`` (step, seconds, the batch sampler's state), written whole
``agent/``             the policy as an exported agent: ``spiral eval --agent RUN/agent`` scores it
``tb/``                TensorBoard: train and held-out NLL, per component too; for a reconstruction
                       agent, greedy MSE on held-out demonstrations' images and ``eval/test_l2`` as
                       ``spiral train`` logs it (sampled, the first 32 test images), so ``spiral curves
                       --x wall`` sets the stages side by side
=====================  ==========================================================================

Replayed episodes are cached in memory as uint8 canvases: episode_length x canvas pixels each, one
channel where the canvas is grey (15 x 64 x 64 bytes, 61 kB, for ``mnist-pen``: 60,000 programs
take 3.7 GB) and three in colour (184 kB for ``photos-paint``).
"""

from __future__ import annotations

import itertools
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from envs import PaintConfig, PaintEnv
from envs.libmypaint import brush_path
from envs.storage import FileFormat, write_file, write_folder
from spiral.agent import load_agent, load_weights, write_agent
from spiral.demonstrations import PAINTERS, Demonstrations, read_demonstrations
from spiral.manifest import AgentManifest, TrainingRecord
from spiral.network_config import PRECISIONS
from spiral.policy import PolicyNetwork, autocast, check_network_size
from spiral.programs import PROGRAMS_FORMAT, read_programs

EVAL_TEST_IMAGES = 32  # as spiral.rllib.trainer's eval/test_l2
RUN_FORMAT = FileFormat("spiral-pretrain-run", 1, "spiral pretraining run")
STATE_FORMAT = FileFormat("spiral-pretrain-checkpoint", 1, "spiral pretraining checkpoint")
RESUMABLE = ("lr", "precision", "eval_every", "brush", "anneal", "lr_end", "augment")  # what a resumed run may change
AUGMENTATIONS = ("channels", "mirror")  # PretrainSettings.augment: the symmetries ``Symmetries`` applies


@dataclass(frozen=True)
class PretrainSettings:
    batch: int = 64  # episodes per Adam step
    lr: float = 1e-3
    held_out: float = 0.05  # the fraction of the demonstrations kept for the held-out NLL
    seed: int = 0
    grad_clip: float = 10.0
    checkpoint_minutes: float = 3.0
    # Steps between held-out NLL measurements: a pass over the held-out 5% costs as many forward passes as
    # training steps take batches of them (1,500 programs: 24 batches, more than half the time at 10).
    eval_every: int = 50
    eval_paintings: int = 32  # held-out images the policy paints, greedy, at each checkpoint
    precision: str = "float32"  # the training pass's arithmetic (policy.autocast), as training.precision for RL
    # The brush the demonstrations' strokes are replayed with, and the agent paints with (None: the one they were
    # painted with). Strokes are actions, so a student may paint its teacher's strokes with another brush: a
    # generator of digits, say, with spiral/soft_pen, whose edge is closer to scanned ink than classic/pen's.
    brush: str | None = None
    # The learning rate falls by a half cosine from lr to lr_end between the steps anneal = (first, last), then stays
    # at lr_end: one long run that ends at a low rate, where stages of constant rates replay the demonstrations at
    # every resume (5.5 minutes for 60,000 programs).
    anneal: tuple[int, int] | None = None
    lr_end: float | None = None
    # Symmetries of the task applied to each training episode at random (``Symmetries``): "channels" permutes the
    # colour channels of the canvases, the target and the strokes' colours; "mirror" flips them left to right. A
    # few hundred photos' demonstrations teach those photos' colours and layouts; a permuted or mirrored copy is
    # another demonstration the environment paints alike, and copying the target is what pays on all of them.
    augment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        for name in ("anneal", "augment"):
            if isinstance(getattr(self, name), list):  # as pretrain.json holds it
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if (self.anneal is None) != (self.lr_end is None):
            problems.append(f"anneal and lr_end go together, got anneal {self.anneal!r} and lr_end {self.lr_end!r}")
        steps = self.anneal
        if steps is not None and not (isinstance(steps, tuple) and len(steps) == 2
                                      and all(type(step) is int for step in steps) and 0 <= steps[0] < steps[1]):
            problems.append(f"anneal must be two steps (first, last) with 0 <= first < last, got {steps!r}")
        for name, low in (("batch", 1), ("seed", 0), ("eval_every", 1), ("eval_paintings", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("lr", "grad_clip", "checkpoint_minutes", *(("lr_end",) if self.lr_end is not None else ())):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                problems.append(f"{name} must be a finite number > 0, got {value!r}")
        if isinstance(self.held_out, bool) or not isinstance(self.held_out, (int, float)) or not 0 <= self.held_out < 1:
            problems.append(f"held_out must be a fraction in [0, 1), got {self.held_out!r}")
        if not isinstance(self.augment, tuple) or len(set(self.augment)) != len(self.augment) or \
                any(name not in AUGMENTATIONS for name in self.augment):
            problems.append(f"augment must name each of {', '.join(AUGMENTATIONS)} at most once, got {self.augment!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.brush is not None:
            try:
                brush_path(self.brush)
            except (ValueError, TypeError) as error:
                problems.append(f"brush: {str(error).rstrip('.')}")
        if problems:
            raise ValueError("Invalid pretraining settings: " + "; ".join(problems) + ".")

    def learning_rate(self, step: int) -> float:
        """Adam's rate for the update after ``step`` updates: ``lr``, or on the ``anneal`` schedule."""
        if self.anneal is None:
            return self.lr
        first, last = self.anneal
        fraction = min(max(step - first, 0) / (last - first), 1.0)
        return self.lr_end + (self.lr - self.lr_end) * (1 + math.cos(math.pi * fraction)) / 2


@dataclass
class Episodes:
    """Replayed demonstrations as tensors: what the policy saw at each step and what it should do."""

    canvases: torch.Tensor  # (N, T, H, W, 3 or 1 where grey) uint8: the canvas before each step
    targets: torch.Tensor  # (N, H, W, 3) uint8
    actions: torch.Tensor  # (N, T, C) int64: the actions painted
    labels: torch.Tensor  # (N, T, C) int64: the actions to imitate (the painted ones, or a correction's labels)
    final_mse: np.ndarray  # (N,) what the replay scored

    def __len__(self) -> int:
        return len(self.actions)

    @staticmethod
    def concatenate(parts: list[Episodes]) -> Episodes:
        if len(parts) == 1:  # a copy of gigabytes of canvases for nothing
            return parts[0]
        return Episodes(*(torch.cat([getattr(part, name) for part in parts]) for name in
                          ("canvases", "targets", "actions", "labels")),
                        np.concatenate([part.final_mse for part in parts]))

    def batch(self, rows: np.ndarray | torch.Tensor, conditional: bool = True, symmetries: Symmetries | None = None,
              rng: np.random.Generator | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Observations (B, T, ...) as ``PaintEnv`` gave them (with the target for a ``conditional`` policy),
        and the actions to imitate (B, T, C); with ``symmetries``, each episode under one drawn from ``rng``."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        canvases, targets = self.canvases[rows], self.targets[rows]
        actions, labels = self.actions[rows], self.labels[rows]
        if symmetries is not None:
            canvases, targets, actions, labels = symmetries.apply(canvases, targets, actions, labels, rng)
        batch, steps = actions.shape[:2]
        previous = torch.cat([torch.zeros_like(actions[:, :1]), actions[:, :-1]], dim=1)
        observation = {
            "canvas": canvases.expand(*canvases.shape[:-1], 3),  # grey canvases are stored as one channel
            "step": (torch.arange(steps, dtype=torch.float32) / steps).view(1, steps, 1).expand(batch, -1, -1),
            "prev_action": previous,
        }
        if conditional:
            observation["target"] = targets[:, None].expand(-1, steps, -1, -1, -1)
        return observation, labels


@dataclass(frozen=True)
class Symmetries:
    """Symmetries of the painting task: each turns a demonstration into another one, painted alike.

    Permuting a stroke's colour channels permutes what it paints (libmypaint blends each channel
    alike, over a background that is grey or white), and mirroring its grid columns mirrors what it
    paints (the cells' centres and the pen's first position, the canvas's middle, are symmetric),
    both to within one level of 255 on a few pixels: libmypaint takes a colour as HSV and rounds.
    ``tests/test_pretrain.py`` checks both on the real renderer. So a permuted or mirrored
    demonstration is one more to learn from, with the canvases the environment would have shown, at
    the cost of indexing the batch.
    """

    colours: tuple[int, ...]  # the action components red, green, blue: permuted together; () for no permutations
    points: tuple[int, ...]  # the action components that are grid cells (end, control): mirrored; () for no mirror
    grid: int

    @classmethod
    def of(cls, config: PaintConfig, augment: tuple[str, ...]) -> Symmetries | None:
        """The symmetries ``augment`` names (``AUGMENTATIONS``) in ``config``'s action space; None for none."""
        from envs import ActionCodec

        if not augment:
            return None
        if "channels" in augment and not config.use_color:
            raise ValueError("--augment channels permutes the strokes' colours, and this action space has none "
                             "(env.use_color is false).")
        index = ActionCodec(config).index
        return cls(tuple(index[name] for name in ("red", "green", "blue")) if "channels" in augment else (),
                   tuple(index[name] for name in ("end", "control")) if "mirror" in augment else (), config.grid_size)

    def apply(self, canvases: torch.Tensor, targets: torch.Tensor, actions: torch.Tensor, labels: torch.Tensor,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch's canvases (B, T, H, W, C), targets (B, H, W, 3), actions and labels (B, T, K), each episode
        under a symmetry drawn from ``rng`` (the identity among them)."""
        actions, labels = actions.clone(), labels.clone()
        episodes = len(actions)
        if self.colours:
            orders = list(itertools.permutations(range(3)))
            drawn = rng.integers(len(orders), size=episodes)
            canvases, targets = canvases.clone(), targets.clone()
            for number, order in enumerate(orders[1:], start=1):
                rows = torch.from_numpy(np.flatnonzero(drawn == number))
                canvases[rows] = canvases[rows][..., list(order)]
                targets[rows] = targets[rows][..., list(order)]
                for tensor in (actions, labels):
                    episodes_drawn = tensor[rows]
                    episodes_drawn[..., list(self.colours)] = episodes_drawn[..., [self.colours[i] for i in order]]
                    tensor[rows] = episodes_drawn
        if self.points:
            mirrored = torch.from_numpy(rng.random(episodes) < 0.5)
            canvases = torch.where(mirrored.view(-1, 1, 1, 1, 1), canvases.flip(-2), canvases)
            targets = torch.where(mirrored.view(-1, 1, 1, 1), targets.flip(-2), targets)
            for tensor in (actions, labels):
                cells = tensor[..., list(self.points)]
                flipped = cells - cells % self.grid + (self.grid - 1 - cells % self.grid)
                tensor[..., list(self.points)] = torch.where(mirrored.view(-1, 1, 1), flipped, cells)
        return canvases, targets, actions, labels


def replay(config: PaintConfig, targets: np.ndarray, actions: list[np.ndarray],
           labels: list[np.ndarray] | None = None) -> Episodes:
    """Replay each action sequence through ``PaintEnv`` on its target, keeping every observation; ``labels``
    are the actions to imitate where they are not the ones painted.

    The observations fill one array allocated up front (stacking a list of episodes held them twice:
    60,000 programs peaked at 23 GB), with one channel where every colour the canvas can take is a
    grey (``grey_canvases``): a third of the memory, 3.7 GB for those programs.
    """
    painted = torch.from_numpy(np.stack(actions).astype(np.int64))
    channels = 1 if grey_canvases(config) else 3
    canvases = np.empty((*painted.shape[:2], *config.canvas_size, channels), np.uint8)
    env = PaintEnv(config, target_source=targets[:1])
    try:
        finals = []
        for target, episode, frames in zip(targets, actions, canvases):
            observation, _ = env.reset(seed=0, options={"target": target})
            for action, frame in zip(episode, frames):
                frame[:] = observation["canvas"][..., :channels]
                if channels == 1 and not (observation["canvas"] == frame).all():
                    raise RuntimeError(f"{config.brush} painted colour on a grey canvas: grey_canvases is wrong.")
                observation = env.step(action)[0]
            finals.append(env.l2())
    finally:
        env.close()
    imitated = painted if labels is None else torch.from_numpy(np.stack(labels).astype(np.int64))
    return Episodes(torch.from_numpy(canvases), torch.from_numpy(np.ascontiguousarray(targets)), painted,
                    imitated, np.asarray(finals))


def grey_canvases(config: PaintConfig) -> bool:
    """Whether every canvas of ``config`` is grey: no colour choice, and a grey paint on a grey ground (libmypaint
    blends the channels alike, so every mix of the two is grey too)."""
    return not config.use_color and all(len(set(colour)) == 1 for colour in (config.background, config.fixed_color))


def nll(policy: PolicyNetwork, observation: dict[str, torch.Tensor], actions: torch.Tensor,
        precision: str = "float32") -> torch.Tensor:
    """Per-component negative log-likelihood of the demonstrated actions, mean over steps: (components,).

    Teacher forcing: the LSTM reads the whole episode from ``initial_state`` and each head is
    conditioned on the demonstrated earlier components, in ``precision`` (``PolicyNetwork.training_pass``;
    the cross-entropy is float32 either way). The sum over components is ``-policy.log_prob(logits, actions).mean()``.
    """
    logits = policy.training_pass(observation, policy.initial_state(len(actions)), actions, precision)[0]
    return torch.stack([F.cross_entropy(part.reshape(-1, part.shape[-1]), actions[..., i].reshape(-1))
                        for i, part in enumerate(policy.split(logits))])


def cloning_step(policy: PolicyNetwork, optimizer: torch.optim.Optimizer, observation: dict[str, torch.Tensor],
                 labels: torch.Tensor, settings: PretrainSettings) -> torch.Tensor:
    """One Adam step on the summed NLL of a batch (gradients clipped to ``settings.grad_clip``), in
    ``settings.precision``; the per-component NLL, detached (what ``benchmarks/learner_step.py`` times too)."""
    parts = nll(policy, observation, labels, settings.precision)
    optimizer.zero_grad()
    parts.sum().backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), settings.grad_clip)
    optimizer.step()
    return parts.detach()


class Pretrainer:
    """A pretraining run in ``run_dir``: ``Pretrainer.start`` begins one, ``Pretrainer(run_dir)`` continues it."""

    def __init__(self, run_dir: str | Path, demos_path: str | Path | None = None, progress: bool = True,
                 corrections: list[str | Path] = (), programs: list[str | Path] = (), anneal_steps: int | None = None,
                 **changes: Any):
        """Continue the run in ``run_dir``; ``demos_path`` points to its demonstrations where they moved,
        ``corrections`` adds corrections files (``spiral demos --student``) to a reconstruction agent's run and
        ``programs`` more programs files of the same images to a generator's (say sampled ones, ``spiral programs
        --sample``: other ways to paint the same digits), to learn from from now on; the run remembers both, and
        ``changes`` sets ``RESUMABLE`` settings from now on, recorded in the run's settings: a lower ``lr``
        for a last stage settles the weights that a constant rate keeps stirring (and ends an anneal);
        ``anneal_steps`` with ``lr_end`` lowers it from ``lr`` to ``lr_end`` over that many steps from the
        step the run has reached; ``precision`` trades rounding for steps."""
        self.run_dir = Path(run_dir)
        run_file = self.run_dir / "pretrain.json"
        if not run_file.is_file():
            raise ValueError(f"{self.run_dir} is not a pretraining run: it has no pretrain.json.")
        if fixed := sorted(set(changes) - set(RESUMABLE)):
            raise ValueError(f"A resumed run keeps its {', '.join(fixed)}: only {', '.join(RESUMABLE)} can change.")
        self.record = RUN_FORMAT.read(run_file)
        self.settings = PretrainSettings(**self.record["settings"])
        changes = {key: value for key, value in changes.items() if value is not None}
        if anneal_steps is not None:
            state_file = self.run_dir / "checkpoint" / "state.json"
            reached = int(STATE_FORMAT.read(state_file)["step"]) if state_file.is_file() else 0
            changes["anneal"] = (reached, reached + anneal_steps)
        elif "lr" in changes and "lr_end" not in changes:  # a new constant rate
            changes |= {"anneal": None, "lr_end": None}
        if changes:  # validated here, recorded below once the run can take them
            self.settings = replace(self.settings, **changes)
        autocast(self.settings.precision, torch.device("cpu"))  # refuses bfloat16 where this CPU lacks it, now
        self.progress = progress
        self.demos = read_imitated(demos_path or self.record["demonstrations"])
        if self.demos.student is not None:
            raise ValueError(f"{self.demos.path} is a corrections file: pretraining starts from the search's own "
                             "demonstrations (`spiral demos` without --student), then adds corrections.")
        if demos_path is not None:
            _check_same_kind(self.demos, self.record, run_file)
        self.experiment = self.demos.experiment().with_overrides(self.record.get("network_overrides", []))
        self.config = self.demos.config
        if self.settings.brush is not None:
            self.config = replace(self.config, brush=self.settings.brush)
            self.experiment = replace(self.experiment, env={**self.experiment.env, "brush": self.settings.brush})
        self.symmetries = Symmetries.of(self.config, self.settings.augment)
        if changes:
            self._record(settings=asdict(self.settings))
        self.conditional = self.experiment.reward.conditional
        if corrections and not self.conditional:
            raise ValueError("Corrections label a reconstruction agent's states; a generator cloned from programs "
                             "learns from programs files: add them with --programs.")
        if programs and self.conditional:
            raise ValueError("More programs files teach a generator; a reconstruction agent learns from "
                             "demonstrations and corrections (--corrections).")
        self.corrections = self._added_files("corrections", corrections, read_demonstrations,
                                             lambda file: self._check_correction(file, run_file))
        self.more_programs = self._added_files("programs", programs, lambda path: read_programs(path).demonstrations(),
                                               lambda file: self._check_more_programs(file, run_file))
        experiment_file, experiment_json = self.run_dir / "experiment.json", self.experiment.to_json()
        if not experiment_file.is_file() or experiment_file.read_text() != experiment_json:  # new, or a new brush
            write_file(experiment_file, lambda path: path.write_text(experiment_json))
        names, nvec = _action_space(self.config)
        network = self.experiment.network_config()
        check_network_size(names, nvec, self.config.grid_size, self.conditional, network)
        torch.manual_seed(self.settings.seed)
        self.policy = PolicyNetwork(names, nvec, self.config.grid_size, self.conditional, network)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.settings.lr)
        self.step, self.seconds = 0, 0.0
        self.sampler = np.random.default_rng(self.settings.seed)
        if (self.run_dir / "checkpoint" / "state.json").is_file():
            self._restore()
        elif self.record.get("init_from"):
            self.policy.load_state_dict(load_weights(Path(self.record["init_from"]) / "policy.pt"))
        # Held-out images are kept out of training in every file; the held-out NLL is measured on the search's
        # own demonstrations (rows of the first file), comparable from the first step to the last.
        held_out, files = set(self.record["held_out"]), [self.demos, *self.corrections, *self.more_programs]
        indices = [(number, index) for number, file in enumerate(files) for index in file.indices]
        self.train_rows = np.array([row for row, (_, index) in enumerate(indices) if index not in held_out], np.int64)
        self.held_rows = np.array([row for row, (number, index) in enumerate(indices)
                                   if number == 0 and index in held_out], np.int64)
        if len(self.train_rows) == 0:
            raise ValueError(f"{self.demos.path} has no demonstrations to train on beyond the held-out ones.")
        start = time.perf_counter()
        self.episodes = Episodes.concatenate([
            replay(self.config, file.targets(), [demo.actions for demo in file.demos],
                   None if file.student is None else [demo.labels for demo in file.demos]) for file in files])
        self.replay_seconds = time.perf_counter() - start
        recorded = np.array([demo.mse for file in files for demo in file.demos])
        mismatched = int(np.sum(self.episodes.final_mse != recorded))
        if mismatched and self.config.brush == self.demos.config.brush:  # another brush paints other canvases
            warnings.warn(f"{mismatched} of {len(recorded)} demonstrations replay to another MSE than recorded "
                          "(another libmypaint version?): training on the replayed canvases.", stacklevel=2)
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(self.run_dir / "tb"))

    def _added_files(self, key: str, added: list[str | Path], read: Callable[[Path], Demonstrations],
                     check: Callable[[Demonstrations], None]) -> list[Demonstrations]:
        """The files the run learns from beside its own (``pretrain.json``'s ``key``), with ``added`` ones read,
        checked and recorded."""
        known = list(self.record.get(key, []))
        new = [str(Path(path).resolve()) for path in added if str(Path(path).resolve()) not in known]
        files = [read(Path(path)) for path in known + new]
        for file in files:
            check(file)
        if new:
            self._record(**{key: known + new})
        return files

    def _check_correction(self, file: Demonstrations, source: Path) -> None:
        if file.student is None:
            raise ValueError(f"{file.path} is not a corrections file: make one with `spiral demos --student AGENT`.")
        _check_same_kind(file, self.record, source)

    def _check_more_programs(self, file: Demonstrations, source: Path) -> None:
        """Programs of the same images in the same action space; painted greedily or sampled, by any agent."""
        if Path(file.path).resolve() == Path(self.demos.path).resolve():
            raise ValueError(f"{file.path} is the run's own programs file: --programs adds other ones.")
        _check_same_kind(file, self.record, source, keys=("preset", "env", "data"))

    def _record(self, **changes) -> None:
        """Change entries of ``pretrain.json`` (atomically)."""
        self.record.update(changes)
        record = RUN_FORMAT.stamp(self.record)
        write_file(self.run_dir / "pretrain.json", lambda path: path.write_text(json.dumps(record, indent=2)))

    @classmethod
    def start(cls, demos_path: str | Path, run_dir: str | Path, settings: PretrainSettings = PretrainSettings(),
              progress: bool = True, network_overrides: list[str] = (), init_from: str | Path | None = None
              ) -> Pretrainer:
        """A new run in ``run_dir`` on the demonstrations file ``demos_path``.

        ``network_overrides`` (``network.field=value``) change the network the demonstrations'
        experiment names, say to pretrain a larger one; the env and data are the demonstrations'.
        ``init_from``, an agent folder whose policy fits that network and action space, gives the
        first weights (Adam starts afresh): a shipped agent cloned further, say on canvases of
        another brush, when its run folder is gone.
        """
        run_dir = Path(run_dir)
        if others := [override for override in network_overrides if not override.startswith("network.")]:
            raise ValueError(f"Pretraining can change only the network (network.field=value), got {others}: the "
                             "demonstrations fix the environment and the data.")
        if (run_dir / "pretrain.json").exists():
            raise ValueError(f"{run_dir} already holds a pretraining run: continue it with --resume, or choose "
                             "another --out.")
        demos = read_imitated(demos_path)
        if len(demos.demos) < 1:
            raise ValueError(f"{demos.path} holds no demonstrations yet: make some with `spiral demos`.")
        experiment = demos.experiment().with_overrides(list(network_overrides))  # refuse what cannot be built
        if init_from is not None:  # checked as training.init_from is (actions, grid, network), before writing
            try:
                init_from = experiment.with_overrides([f"training.init_from={json.dumps(str(init_from))}"]
                                                      ).training.init_from
            except ValueError as error:
                raise ValueError(str(error).replace("training.init_from", "--init-from")) from None
        autocast(settings.precision, torch.device("cpu"))
        Symmetries.of(demos.config, settings.augment)  # refuses channels without colours, before writing
        order = np.random.default_rng(settings.seed).permutation(len(demos.demos))
        total = len(demos.demos)
        count = min(max(round(settings.held_out * total), 1 if settings.held_out > 0 else 0), total - 1)
        held_out = sorted(demos.indices[row] for row in order[:count])
        record = RUN_FORMAT.stamp({
            "demonstrations": str(Path(demos_path).resolve()),
            "demonstrations_header": {key: demos.header[key] for key in ("preset", "env", "data", *PAINTERS)
                                      if key in demos.header},
            "settings": asdict(settings),
            "held_out": held_out,  # image indices: kept out even if the file grows before a --resume
            "network_overrides": list(network_overrides),
            "init_from": None if init_from is None else str(init_from),  # the first weights' agent, absolute
        })
        write_file(run_dir / "pretrain.json", lambda path: path.write_text(json.dumps(record, indent=2)))
        return cls(run_dir, progress=progress)

    def _restore(self) -> None:
        folder = self.run_dir / "checkpoint"
        state = STATE_FORMAT.read(folder / "state.json")
        self.policy.load_state_dict(load_weights(folder / "policy.pt"))
        try:
            optimizer_state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
            self.optimizer.load_state_dict(optimizer_state)
        except Exception as error:  # a corrupt or foreign file: torch raises many kinds
            raise ValueError(f"{folder / 'optimizer.pt'} is not this run's optimizer state: {error}") from error
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        for group in self.optimizer.param_groups:  # the saved state carries the rate it was saved with
            group["lr"] = self.settings.learning_rate(self.step)
        self.sampler.bit_generator.state = state["sampler"]

    def run(self, minutes: float | None = None, steps: int | None = None) -> dict[str, float]:
        """Train for ``minutes`` of wall-clock time and/or ``steps`` Adam steps (whichever ends first),
        checkpointing every ``checkpoint_minutes`` and at the end; the last measurements."""
        from tqdm import tqdm

        if minutes is None and steps is None:
            raise ValueError("Give a budget: minutes, steps or both.")
        settings, policy = self.settings, self.policy
        deadline = time.monotonic() + (minutes * 60 if minutes is not None else math.inf)
        last_checkpoint, done, measured = time.monotonic(), 0, {}
        policy.train()
        with tqdm(total=steps, desc="pretrain", unit="step", disable=not self.progress) as bar:
            while time.monotonic() < deadline and (steps is None or done < steps):
                started = time.perf_counter()
                rows = self.train_rows[self.sampler.integers(len(self.train_rows), size=settings.batch)]
                rate = settings.learning_rate(self.step)
                for group in self.optimizer.param_groups:
                    group["lr"] = rate
                observation, labels = self.episodes.batch(rows, self.conditional, self.symmetries, self.sampler)
                parts = cloning_step(policy, self.optimizer, observation, labels, settings)
                self.step, done = self.step + 1, done + 1
                self.seconds += time.perf_counter() - started
                measured["train_nll"] = float(parts.sum())
                self._scalars("train", parts)
                self.writer.add_scalar("pretrain/lr", rate, self.step)
                if self.step % settings.eval_every == 0:
                    measured["held_out_nll"] = self.held_out_nll()
                bar.update()
                bar.set_postfix({key: f"{value:.3f}" for key, value in measured.items()})
                if time.monotonic() - last_checkpoint > settings.checkpoint_minutes * 60:
                    measured |= self.checkpoint()
                    last_checkpoint = time.monotonic()
        measured["held_out_nll"] = self.held_out_nll()
        measured |= self.checkpoint()
        return measured

    def _scalars(self, split: str, parts: torch.Tensor) -> float:
        total = float(parts.detach().sum())
        self.writer.add_scalar(f"pretrain/{split}_nll", total, self.step)
        for name, value in zip(self.policy.names, parts.detach().tolist()):
            self.writer.add_scalar(f"pretrain/{split}_nll_{name}", value, self.step)
        return total

    @torch.no_grad()
    def held_out_nll(self) -> float:
        """The NLL per step of the held-out demonstrations (nan without any), logged to TensorBoard."""
        if len(self.held_rows) == 0:
            return math.nan
        self.policy.eval()
        try:
            chunks = np.array_split(self.held_rows, math.ceil(len(self.held_rows) / self.settings.batch))
            parts = sum(nll(self.policy, *self.episodes.batch(chunk, self.conditional)) * len(chunk)
                        for chunk in chunks)
            return self._scalars("held_out", parts / len(self.held_rows))
        finally:
            self.policy.train()

    def checkpoint(self) -> dict[str, float]:
        """Write the checkpoint and the exported agent (each whole), then score the agent, greedy, on held-out
        demonstrations' images against the search that made them; the scores."""
        state = STATE_FORMAT.stamp({"step": self.step, "seconds": self.seconds,
                                    "sampler": self.sampler.bit_generator.state})

        def fill(folder: Path) -> None:
            torch.save(self.policy.state_dict(), folder / "policy.pt")
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            (folder / "state.json").write_text(json.dumps(state, indent=2))

        write_folder(self.run_dir / "checkpoint", fill)
        agent_dir = self.export(self.run_dir / "agent")
        rows = self.held_rows[:self.settings.eval_paintings]
        if len(rows) == 0 or not self.conditional:  # a generator is judged by `spiral eval --samples`
            return {}
        agent = load_agent(agent_dir)
        targets = self.episodes.targets[rows].numpy()
        greedy = float(np.mean([episode.l2 for episode in agent.paint_all(targets, [0] * len(targets), greedy=True)]))
        search = float(np.mean(self.episodes.final_mse[rows]))
        self.writer.add_scalar("pretrain/held_out_greedy_mse", greedy, self.step)
        self.writer.add_scalar("pretrain/held_out_search_mse", search, self.step)
        # What an RL run logs as eval/test_l2 (spiral.rllib.trainer: sampled, seeded by the image's place).
        tests = self.experiment.images("test", EVAL_TEST_IMAGES)
        if len(tests):
            sampled = float(np.mean([episode.l2 for episode in agent.paint_all(tests)]))
            self.writer.add_scalar("eval/test_l2", sampled, self.step)
        self.writer.flush()
        return {"greedy_mse": greedy, "search_mse": search}

    def export(self, folder: Path) -> Path:
        """The policy as an agent folder, with a manifest that says what it paints with and learned from."""
        experiment = self.experiment
        manifest = AgentManifest(experiment.name, self.config, experiment.network_config(), self.conditional,
                                 data=experiment.data, reward=experiment.reward,
                                 training=TrainingRecord(iterations=self.step, env_steps=0))
        return write_agent(folder, {key: value.detach().clone() for key, value in self.policy.state_dict().items()},
                           {}, manifest)

    def close(self) -> None:
        self.writer.close()


def read_imitated(path: str | Path) -> Demonstrations:
    """What a run imitates: a demonstrations file (``spiral demos``), or a programs file (``spiral programs``)
    as the demonstrations of an unconditional generator (``ProgramsFile.demonstrations``)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as file:
            first = json.loads(file.readline())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        first = None  # read_demonstrations says what is wrong
    if isinstance(first, dict) and first.get("format") == PROGRAMS_FORMAT.name:
        return read_programs(path).demonstrations()
    return read_demonstrations(path)


def _action_space(config: PaintConfig) -> tuple[tuple[str, ...], tuple[int, ...]]:
    from envs import ActionCodec

    codec = ActionCodec(config)
    return codec.names, tuple(codec.nvec.tolist())


def _check_same_kind(demos: Demonstrations, record: dict[str, Any], source: Path,
                     keys: tuple[str, ...] = ("preset", "env", "data", *PAINTERS)) -> None:
    """Refuse a demonstrations file made with other settings (``keys`` of its header) than the run's."""
    made = record["demonstrations_header"]
    different = [key for key in keys if key in made and demos.header.get(key) != made[key]]
    if different:
        raise ValueError(f"{demos.path} was made with other {', '.join(different)} than the demonstrations of the "
                         f"run in {source.parent}: continue it on its own file ({record['demonstrations']}).")
