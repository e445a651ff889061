"""One object that describes an experiment, loaded from a preset file and command-line overrides.

Presets are data (``train/presets/<name>.toml``), not code paths: every field below can be set
in a preset and overridden on the command line as ``section.field=value``. Every value is checked
here, once, before Ray or RLlib see it: its type from the dataclasses' type hints (a bool is not a
number), its range or choices from ``LIMITS``; ``env`` and ``network`` by the types of
``PaintConfig`` and ``NetworkConfig``, then by those classes themselves.
"""

from __future__ import annotations

import functools
import json
import math
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs import COMPONENTS, PaintConfig
from envs.config import IN_ENV_REWARDS
from spiral.datasets import DATASETS, FOLDER_PREFIX
from spiral.network_config import PRECISIONS, NetworkConfig
from spiral.shipped import package_dir

PRESET_DIR = package_dir("spiral.presets")  # train/presets in a checkout; installed as package data
DISCRIMINATOR_LOSSES = ("wgan-gp", "nonsaturating")
SPLITS = ("train", "validation", "test")
VALIDATION_IMAGES = 100  # painted greedy at every checkpoint, all at once (Agent.paint_all): about 3 s for mnist-pen
VALIDATION_MIN_TRAIN = 2000  # training images a dataset needs before it spares validation ones
ALGORITHMS = ("impala", "appo")


@dataclass
class DataSettings:
    """The real images: targets in conditional mode, ``real`` for the discriminator otherwise."""

    dataset: str = "mnist"  # see spiral.datasets.DATASETS, or "folder:/path/to/images"
    color: bool = False
    invert: bool = False  # datasets are white on black; True paints black on white
    limit: int | None = None  # images per split, for quick runs


# The learner's reward modes (``RewardSettings.mode``; ``spiral.rewards`` computes them).
LEARNER_REWARD_MODES = ("final", "temporal", "l2", "mix")
DISCRIMINATOR_MODES = ("final", "temporal", "mix")  # the modes that score canvases with the discriminator
L2_MODES = ("l2", "mix")  # the modes that compare canvases with targets


@dataclass
class RewardSettings:
    """How the learner turns canvases into rewards (always with the current discriminator; ``spiral.rewards``).

    ``final``: D(final canvas) at the last step (SPIRAL); ``temporal``: D(c_t) - D(c_{t-1})
    (SPIRAL++); ``l2``: the decrease of the squared distance to the target at every step (the
    L2 baseline); ``mix``: ``temporal`` times ``discriminator_weight`` plus ``l2`` times
    ``l2_weight``. ``conditional`` gives the policy a target to reproduce; ``complement`` makes
    the discriminator judge a half of the canvas against the other half of the target.
    """

    mode: str = "temporal"
    conditional: bool = True
    complement: bool = False
    discriminator_weight: float = 1.0
    l2_weight: float = 1.0
    # Divide discriminator rewards by a running estimate of the spread of its scores: a WGAN
    # critic's scale drifts without bound, and so would the rewards and the value loss.
    normalize: bool = True
    stroke_penalty: float = 0.0  # per painted stroke (SPIRAL used a small one)
    blank_penalty: float = 0.0  # for a final canvas with nothing on it


@dataclass
class DiscriminatorSettings:
    loss: str = "wgan-gp"
    width: int = 16
    spectral_norm: bool = False
    lr: float = 1e-4
    gp_weight: float = 10.0
    replay_batches: int = 20


@dataclass
class TrainingSettings:
    algorithm: str = "impala"  # or "appo"
    lr: float = 5e-4
    gamma: float = 0.6
    entropy_coeff: float = 0.02
    # Multipliers of entropy_coeff per action component, e.g. {"flag": 3.0}.
    entropy_weights: dict[str, float] = field(default_factory=dict)
    # A per-component floor, as a fraction of the component's maximal entropy log(n):
    # falling below it costs entropy_floor_coeff * (floor - entropy).
    entropy_floor: float = 0.0
    entropy_floor_coeff: float = 0.1
    vf_loss_coeff: float = 0.5
    grad_clip: float = 40.0
    batch_episodes: int = 16  # episodes per learner update
    num_env_runners: int = 1
    envs_per_env_runner: int = 8
    iterations: int = 100
    time_budget_s: float | None = None
    seed: int = 0
    # An agent folder whose policy weights start this run (e.g. a supervised-pretrained policy):
    # checked against env and network here (``Experiment._init_from_problems``), loaded when the
    # algorithm builds (``spiral.rllib.module``); a resumed run starts from its checkpoint instead.
    init_from: str | None = None
    # With init_from: the policy loss adds anchor_kl x KL(policy || the init_from policy) per step,
    # summed over the components, which holds what pretraining taught while a young discriminator
    # gives noisy rewards (SPIRAL++'s concern; RL from scratch collapses within 20k steps here).
    anchor_kl: float = 0.0
    # For the first critic_warmup_steps env steps the policy holds still (no gradient reaches its torso
    # or its action heads) while the discriminator and the value head learn from its canvases: a
    # pretrained policy then meets a critic that already tells its canvases from real ones, and
    # advantages from a value head that knows its returns, instead of a young critic's noise.
    critic_warmup_steps: int = 0
    # The arithmetic of the learner's policy forward and backward: "float32", or "bfloat16" (autocast;
    # where the CPU or GPU has bf16 arithmetic, which the learner checks when it starts). Env runners
    # sample in float32 either way, so V-trace's importance ratios see the learner's rounding only.
    precision: str = "float32"


@dataclass
class CheckpointSettings:
    every: int = 10  # iterations
    keep: int = 3
    image_every: int = 5  # iterations between image grids in TensorBoard


@dataclass
class Experiment:
    name: str = "experiment"
    env: dict[str, Any] = field(default_factory=dict, metadata={"settings": PaintConfig})
    network: dict[str, Any] = field(default_factory=dict, metadata={"settings": NetworkConfig})
    data: DataSettings = field(default_factory=DataSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    discriminator: DiscriminatorSettings = field(default_factory=DiscriminatorSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)

    def __post_init__(self) -> None:
        # Each field on its own first: the checks across fields below assume well-typed values.
        problems = _settings_problems(self, type(self), "") or self._consistency_problems()
        if problems:
            raise ValueError("Invalid experiment: " + "; ".join(problems) + ".")

    def _consistency_problems(self) -> list[str]:
        """What the fields, each valid on its own, get wrong together."""
        problems = []
        if self.reward.mode in L2_MODES and not self.reward.conditional:
            problems.append(f"reward.mode={self.reward.mode!r} compares with targets: set reward.conditional=true")
        if self.env.get("reward", "none") in set(IN_ENV_REWARDS) - {"none"}:
            # The learner replaces every reward with those of reward.mode: an in-env reward would be ignored.
            problems.append(f"env.reward={self.env['reward']!r} would be ignored: the learner replaces every "
                            f"reward with those of reward.mode={self.reward.mode!r}; for the L2 reward set "
                            f"reward.mode=\"l2\" and leave env.reward=\"none\"")
        if self.reward.complement and not self.reward.conditional:
            problems.append("reward.complement needs reward.conditional=true")
        if self.env.get("fit_color") is True and not self.reward.conditional:
            problems.append("env.fit_color takes each stroke's colour from the target: it needs reward.conditional=true")
        try:  # the types are checked: what is left is PaintConfig's own ranges and unknown keys
            self.paint_config()
        except (TypeError, ValueError) as error:
            problems.append(f"[env] {str(error).removeprefix('Invalid PaintConfig: ').rstrip('.')}")
        # A weight of a component this env leaves out does nothing; a name of no component is a typo.
        if unknown := sorted(set(self.training.entropy_weights) - set(COMPONENTS)):
            problems.append(f"training.entropy_weights names {unknown}, which are not action components; "
                            f"the components: {list(COMPONENTS)}")
        try:
            self.network_config()
        except (TypeError, ValueError) as error:
            problems.append(str(error))
        if self.training.anchor_kl > 0 and self.training.init_from is None:
            problems.append("training.anchor_kl holds the policy near the one it starts from: set "
                            "training.init_from to that agent's folder")
        if self.training.init_from is not None and not problems:  # compared with a valid env and network
            problems += self._init_from_problems()
        return problems

    def _init_from_problems(self) -> list[str]:
        """Whether ``training.init_from`` is an agent whose policy fits this experiment's.

        Cheap: only ``agent.json`` is read (the weights are loaded when the algorithm builds). A
        fitting folder is recorded as an absolute path: Ray's workers and a later ``--resume`` (from
        any directory) validate this experiment again and load the weights from it.
        """
        from envs import ActionCodec
        from spiral.manifest import AgentManifest  # spiral.manifest imports this module

        source = self.training.init_from
        refused = f"training.init_from must be an exported agent folder (agent.json and policy.pt), got {source!r}"
        try:
            folder = Path(source).expanduser().resolve() if source.strip() else None
            if folder is None or not folder.is_dir():
                return [f"{refused}: no such folder"]
            for name in ("agent.json", "policy.pt"):
                if not (folder / name).is_file():
                    return [f"{refused}: it has no {name}"]
            manifest = AgentManifest.read(folder / "agent.json")
        except (OSError, ValueError) as error:  # unreadable, or a name the file system refuses
            return [f"{refused}: {str(error).rstrip('.')}"]
        paint, network = self.paint_config(), self.network_config()
        codec, theirs, ours = ActionCodec(paint), [], []
        if (manifest.action_names, manifest.action_nvec) != (codec.names, tuple(codec.nvec.tolist())):
            theirs.append(f"actions {list(manifest.action_names)} of sizes {list(manifest.action_nvec)}")
            ours.append(f"actions {list(codec.names)} of sizes {codec.nvec.tolist()}")
        if manifest.env.grid_size != paint.grid_size:
            theirs.append(f"grid {manifest.env.grid_size}")
            ours.append(f"grid {paint.grid_size}")
        if manifest.conditional != self.reward.conditional:
            theirs.append(f"reward.conditional={_shown(manifest.conditional)}")
            ours.append(f"reward.conditional={_shown(self.reward.conditional)}")
        for key, value in network.to_dict().items():
            if getattr(manifest.network, key) != value:
                theirs.append(f"network.{key}={_shown(getattr(manifest.network, key))}")
                ours.append(f"network.{key}={_shown(value)}")
        if theirs:
            return [f"training.init_from {source} was trained with {', '.join(theirs)}; "
                    f"this experiment uses {', '.join(ours)}"]
        self.training.init_from = str(folder)
        return []

    def paint_config(self) -> PaintConfig:
        return PaintConfig.from_dict(self.env)

    def network_config(self) -> NetworkConfig:
        known = {f.name for f in fields(NetworkConfig)}
        if unknown := sorted(set(self.network) - known):
            raise ValueError(f"Unknown network setting(s) {[f'network.{key}' for key in unknown]}; "
                             f"known: {sorted(known)}")
        return NetworkConfig(**self.network)

    def images(self, split: str, count: int | None = None) -> np.ndarray:
        """The dataset's ``train``, ``validation`` or ``test`` images at the canvas size, (N, H, W, 3) uint8.

        ``validation`` is the last ``VALIDATION_IMAGES`` of the dataset's training split, kept out of
        ``train`` (targets and the discriminator's real images), where that split is large enough
        to spare them (``VALIDATION_MIN_TRAIN``); a run chooses its ``best/`` export on them, so the
        test split only measures. Smaller splits have no validation images.
        Loaded once per process: an env runner builds many environments from the same images.
        ``count`` keeps the first ``count`` images; of the test split only those are loaded (a limited
        load is a prefix of the full one), so a few test images cost a few, not the whole dataset.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        data = self.data
        limit = data.limit
        if count is not None and split == "test":
            limit = count if limit is None else min(limit, count)
        dataset = _load_dataset(data.dataset, self.paint_config().canvas_size, data.color, data.invert,
                                limit, self.training.seed)
        images = dataset.test if split == "test" else split_training_images(dataset.train, split)
        return images if count is None else images[:count]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        if not isinstance(data, dict):
            raise ValueError(f"An experiment must be a table of sections, got {_shown(data)}")
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"Unknown experiment section(s) {unknown}; known: {sorted(known)}")
        sections = {key: _section(SECTIONS[key], value, key) for key, value in data.items() if key in SECTIONS}
        return cls(**(data | sections))

    @classmethod
    def from_preset(cls, name_or_path: str, overrides: list[str] = ()) -> Experiment:
        """A preset by name (``train/presets/NAME.toml``) or path, then ``section.field=value`` overrides.

        The preset is validated on its own first, so that a mistake in the file is reported with its
        name, then again with the overrides.
        """
        path = Path(name_or_path)
        if not path.suffix:
            path = PRESET_DIR / f"{name_or_path}.toml"
        try:
            found = path.is_file()
        except OSError:  # a name no file system takes: too long, say
            found = False
        if not found:
            available = sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
            raise ValueError(f"No preset {name_or_path!r}: no file {path}. Presets: {available}.")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"Preset {path} is not valid TOML: {error}") from None
        except RecursionError:
            raise ValueError(f"Preset {path} nests tables or arrays too deeply to be a preset.") from None
        except UnicodeDecodeError as error:
            raise ValueError(f"Preset {path} is not a text file: {error}") from None
        except OSError as error:
            raise ValueError(f"Preset {path} cannot be read: {error.strerror or error}") from None
        data.setdefault("name", path.stem)
        try:
            experiment = cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"Preset {path}: {error}") from None
        return experiment.with_overrides(overrides) if overrides else experiment

    def with_overrides(self, overrides: list[str]) -> Experiment:
        """This experiment with ``section.field=value`` overrides applied, validated as a whole."""
        data = self.to_dict()
        for override in overrides:
            _apply_override(data, override)
        return Experiment.from_dict(data)


def split_training_images(train: np.ndarray, split: str) -> np.ndarray:
    """The ``train`` or ``validation`` part of a dataset's training split (``Experiment.images``): the last
    ``VALIDATION_IMAGES`` are validation ones where the split has at least ``VALIDATION_MIN_TRAIN``."""
    kept = VALIDATION_IMAGES if len(train) >= VALIDATION_MIN_TRAIN else 0
    cut = len(train) - kept
    return train[:cut] if split == "train" else train[cut:]


@functools.lru_cache(maxsize=4)
def _load_dataset(name: str, size: tuple[int, int], color: bool, invert: bool, limit: int | None, seed: int):
    from spiral.datasets import load_dataset  # imports scikit-image and scikit-learn: only when needed

    return load_dataset(name, size, color=color, invert=invert, limit=limit, seed=seed)


SECTIONS = {
    "data": DataSettings, "reward": RewardSettings, "discriminator": DiscriminatorSettings,
    "training": TrainingSettings, "checkpoint": CheckpointSettings,
}


@dataclass(frozen=True)
class Range:
    """The numbers from ``low`` up to ``high`` (None: no bound); ``strict`` leaves ``low`` itself out."""

    low: float | None = None
    high: float | None = None
    strict: bool = False

    def __contains__(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.strict else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.strict else '>='} {self.low:g}"
        return f"in {'(' if self.strict else '['}{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class OneOf:
    """One of a few words, or (with ``prefix``) any word that starts with it, such as ``folder:<path>``."""

    choices: tuple[str, ...]
    prefix: str | None = None

    def __contains__(self, value: str) -> bool:
        return value in self.choices or bool(self.prefix and value.startswith(self.prefix) and value != self.prefix)

    def __str__(self) -> str:
        return f"one of {self.choices}" + (f" or '{self.prefix}...'" if self.prefix else "")


# The allowed values of settings by full name, beyond their types (from the type hints). A limit on
# a table or a list holds for each of its values. ``env`` settings are PaintConfig's to check.
POSITIVE, NON_NEGATIVE, COUNT, FRACTION = Range(0, strict=True), Range(0), Range(1), Range(0, 1)
LIMITS: dict[str, Range | OneOf] = {
    "network.input_size": COUNT, "network.channels": COUNT, "network.res_blocks": NON_NEGATIVE,
    "network.hidden": COUNT, "network.embedding": COUNT, "network.fine_channels": NON_NEGATIVE,
    "training.anchor_kl": NON_NEGATIVE, "training.precision": OneOf(PRECISIONS),
    "data.dataset": OneOf(DATASETS, FOLDER_PREFIX), "data.limit": COUNT,
    "reward.mode": OneOf(LEARNER_REWARD_MODES), "reward.discriminator_weight": NON_NEGATIVE,
    "reward.l2_weight": NON_NEGATIVE, "reward.stroke_penalty": NON_NEGATIVE, "reward.blank_penalty": NON_NEGATIVE,
    "discriminator.loss": OneOf(DISCRIMINATOR_LOSSES), "discriminator.width": COUNT, "discriminator.lr": POSITIVE,
    "discriminator.gp_weight": NON_NEGATIVE, "discriminator.replay_batches": COUNT,
    "training.algorithm": OneOf(ALGORITHMS), "training.lr": POSITIVE, "training.gamma": FRACTION,
    "training.entropy_coeff": NON_NEGATIVE, "training.entropy_weights": NON_NEGATIVE,
    "training.entropy_floor": FRACTION, "training.entropy_floor_coeff": NON_NEGATIVE,
    "training.vf_loss_coeff": NON_NEGATIVE, "training.grad_clip": POSITIVE, "training.batch_episodes": COUNT,
    "training.num_env_runners": NON_NEGATIVE,  # 0: one per CPU but one
    "training.envs_per_env_runner": COUNT, "training.iterations": COUNT, "training.time_budget_s": POSITIVE,
    "training.seed": NON_NEGATIVE, "training.critic_warmup_steps": NON_NEGATIVE,
    "checkpoint.every": COUNT, "checkpoint.keep": COUNT, "checkpoint.image_every": COUNT,
}
# Where a type hint says less than the setting accepts: PaintConfig takes one int for a square canvas.
HINTS: dict[str, Any] = {"env.canvas_size": int | tuple[int, int]}


def _settings_problems(settings: Any, kind: type, prefix: str) -> list[str]:
    """One message per field of the dataclass ``settings`` whose value does not fit its type hint and limit.

    A section (a dataclass field) is walked field by field; a table of another class's settings
    (``metadata={"settings": PaintConfig}``) is checked by that class's type hints, leaving its
    unknown keys and ranges to the class itself.
    """
    problems, hints = [], typing.get_type_hints(kind)
    for spec in fields(kind):
        name, value, hint = prefix + spec.name, getattr(settings, spec.name), hints[spec.name]
        schema = spec.metadata.get("settings")
        if is_dataclass(hint) and isinstance(value, hint):
            problems += _settings_problems(value, hint, name + ".")
        elif schema is not None and isinstance(value, dict):
            schema_hints = typing.get_type_hints(schema)
            problems += [problem for key, item in value.items() if key in schema_hints
                         for problem in _value_problems(item, schema_hints[key], f"{name}.{key}")]
        else:
            problems += _value_problems(value, hint, name)
    return problems


def _value_problems(value: Any, hint: Any, name: str) -> list[str]:
    hint, limit = HINTS.get(name, hint), LIMITS.get(name)
    if _fits(value, hint, limit):
        return []
    return [f"{name} must be {_described(hint, limit)}, got {_shown(value)}"]


def _fits(value: Any, hint: Any, limit: Range | OneOf | None = None) -> bool:
    """Whether ``value`` (as parsed from TOML or JSON) is of type ``hint`` and, at its leaves, within ``limit``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option, limit) for option in args)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(key, args[0]) and _fits(item, args[1], limit)
                                               for key, item in value.items())
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is list or args[-1] is Ellipsis:
            return all(_fits(item, args[0], limit) for item in value)
        return len(value) == len(args) and all(_fits(item, arg, limit) for item, arg in zip(value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # a bool is an int to Python, never to a setting
        fits = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:  # 2 is a number as well as 2.0; nan and inf are not
        fits = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif hint is str:
        fits = isinstance(value, str)
    else:
        raise TypeError(f"no check for settings of type {hint!r}")
    return fits and (limit is None or value in limit)


def _described(hint: Any, limit: Range | OneOf | None = None, plural: bool = False) -> str:
    """What ``_fits`` wants, in words: "a number > 0", "a list of 3 integers", ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in args if option is not type(None)]
        words = " or ".join(_described(option, limit, plural) for option in options)
        return words + (" (or left out)" if len(options) < len(args) else "")
    if origin is dict:
        return "a table" if args[1] is Any else f"a table of {_described(args[1], limit, plural=True)}"
    if origin in (tuple, list):
        if origin is list or args[-1] is Ellipsis:
            return f"a list of {_described(args[0], limit, plural=True)}"
        return f"a list of {len(args)} {_described(args[0], limit, plural=True)}"
    if isinstance(limit, OneOf):
        return ("words, each " if plural else "") + str(limit)
    words = {bool: ("true or false", "true/false values"), int: ("an integer", "integers"),
             float: ("a number", "numbers"), str: ("a string", "strings")}.get(hint, (str(hint), str(hint)))
    return words[plural] + (f" {limit}" if limit is not None and hint is not bool else "")


def _shown(value: Any) -> str:
    """A value as a preset or an override writes it: ``true``, not ``True``."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _section(kind: type, values: Any, name: str):
    """A settings dataclass from a table, naming any key that is not a setting instead of ignoring it."""
    if not isinstance(values, dict):
        raise ValueError(f"[{name}] must be a table of settings, got {values!r}")
    known = {f.name for f in fields(kind)}
    if unknown := sorted(set(values) - known):
        raise ValueError(f"Unknown setting(s) {[f'{name}.{key}' for key in unknown]}; [{name}] knows {sorted(known)}")
    return kind(**values)


def _apply_override(data: dict[str, Any], override: str) -> None:
    """``training.lr=3e-4`` -> data["training"]["lr"] = 3e-4; values are parsed as TOML."""
    key, separator, text = override.partition("=")
    if not separator or not key.strip():
        raise ValueError(f"Override {override!r} must look like section.field=value, e.g. training.lr=3e-4")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word, such as a dataset name
    except RecursionError:
        raise ValueError(f"Override {key.strip()} nests arrays or tables too deeply to be a setting.") from None
    *parents, leaf = key.strip().split(".")
    target = data
    for depth, parent in enumerate(parents, 1):
        target = target.setdefault(parent, {})
        if not isinstance(target, dict):
            raise ValueError(f"Override {override!r}: {'.'.join(parents[:depth])} is a setting, not a section "
                             "of settings")
    target[leaf] = value
