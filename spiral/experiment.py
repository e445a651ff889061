"""One object that describes an experiment, loaded from a preset file and command-line overrides.

Presets are data (``train/presets/<name>.toml``), not code paths: every field below can be set
in a preset and overridden on the command line as ``section.field=value``.
"""

from __future__ import annotations

import functools
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from envs import PaintConfig
from envs.config import IN_ENV_REWARDS
from spiral.policy import NetworkConfig
from spiral.rewards import L2_MODES, LEARNER_REWARD_MODES
from spiral.shipped import package_dir

PRESET_DIR = package_dir("spiral.presets")  # train/presets in a checkout; installed as package data
DISCRIMINATOR_LOSSES = ("wgan-gp", "nonsaturating")
ALGORITHMS = ("impala", "appo")


@dataclass
class DataSettings:
    """The real images: targets in conditional mode, ``real`` for the discriminator otherwise."""

    dataset: str = "mnist"  # see spiral.datasets.DATASETS, or "folder:/path/to/images"
    color: bool = False
    invert: bool = False  # datasets are white on black; True paints black on white
    limit: int | None = None  # images per split, for quick runs


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


@dataclass
class CheckpointSettings:
    every: int = 10  # iterations
    keep: int = 3
    image_every: int = 5  # iterations between image grids in TensorBoard


@dataclass
class Experiment:
    name: str = "experiment"
    env: dict[str, Any] = field(default_factory=dict)  # PaintConfig settings
    network: dict[str, Any] = field(default_factory=dict)  # NetworkConfig settings
    data: DataSettings = field(default_factory=DataSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    discriminator: DiscriminatorSettings = field(default_factory=DiscriminatorSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)

    def __post_init__(self) -> None:
        problems = []
        if self.reward.mode not in LEARNER_REWARD_MODES:
            problems.append(f"reward.mode must be one of {LEARNER_REWARD_MODES}, got {self.reward.mode!r}")
        if self.reward.mode in L2_MODES and not self.reward.conditional:
            problems.append(f"reward.mode={self.reward.mode!r} compares with targets: set reward.conditional=true")
        if self.env.get("reward", "none") in set(IN_ENV_REWARDS) - {"none"}:
            # The learner replaces every reward with those of reward.mode: an in-env reward would be ignored.
            problems.append(f"env.reward={self.env['reward']!r} would be ignored: the learner replaces every "
                            f"reward with those of reward.mode={self.reward.mode!r}; for the L2 reward set "
                            f"reward.mode=\"l2\" and leave env.reward=\"none\"")
        if self.reward.complement and not self.reward.conditional:
            problems.append("reward.complement needs reward.conditional=true")
        if self.training.algorithm not in ALGORITHMS:
            problems.append(f"training.algorithm must be one of {ALGORITHMS}, got {self.training.algorithm!r}")
        if self.discriminator.loss not in DISCRIMINATOR_LOSSES:
            problems.append(f"discriminator.loss must be one of {DISCRIMINATOR_LOSSES}")
        try:
            self.paint_config()
            self.network_config()
        except (TypeError, ValueError) as error:
            problems.append(str(error))
        if problems:
            raise ValueError("Invalid experiment: " + "; ".join(problems) + ".")

    def paint_config(self) -> PaintConfig:
        return PaintConfig.from_dict(self.env)

    def network_config(self) -> NetworkConfig:
        known = {f.name for f in fields(NetworkConfig)}
        if unknown := sorted(set(self.network) - known):
            raise ValueError(f"Unknown network setting(s) {unknown}; known: {sorted(known)}")
        return NetworkConfig(**self.network)

    def images(self, split: str) -> np.ndarray:
        """The dataset's ``train`` or ``test`` images at the canvas size, (N, H, W, 3) uint8.

        Loaded once per process: an env runner builds many environments from the same images.
        """
        data = self.data
        dataset = _load_dataset(data.dataset, self.paint_config().canvas_size, data.color, data.invert,
                                data.limit, self.training.seed)
        return dataset.train if split == "train" else dataset.test

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"Unknown experiment section(s) {unknown}; known: {sorted(known)}")
        sections = {key: _section(SECTIONS[key], value, key) for key, value in data.items() if key in SECTIONS}
        return cls(**(data | sections))

    @classmethod
    def from_preset(cls, name_or_path: str, overrides: list[str] = ()) -> Experiment:
        """A preset by name (``train/presets/NAME.toml``) or path, then ``section.field=value`` overrides."""
        path = Path(name_or_path)
        if not path.suffix:
            path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            available = sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
            raise ValueError(f"No preset {name_or_path!r}: no file {path}. Presets: {available}.")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"Preset {path} is not valid TOML: {error}") from error
        data.setdefault("name", path.stem)
        for override in overrides:
            _apply_override(data, override)
        return cls.from_dict(data)


@functools.lru_cache(maxsize=4)
def _load_dataset(name: str, size: tuple[int, int], color: bool, invert: bool, limit: int | None, seed: int):
    from spiral.datasets import load_dataset  # imports scikit-image and scikit-learn: only when needed

    return load_dataset(name, size, color=color, invert=invert, limit=limit, seed=seed)


SECTIONS = {
    "data": DataSettings, "reward": RewardSettings, "discriminator": DiscriminatorSettings,
    "training": TrainingSettings, "checkpoint": CheckpointSettings,
}


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
    *parents, leaf = key.strip().split(".")
    target = data
    for parent in parents:
        target = target.setdefault(parent, {})
    target[leaf] = value
