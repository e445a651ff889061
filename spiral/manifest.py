"""``agent.json``: what an exported agent paints with and was trained on, as one typed value.

The trainer writes it, ``load_agent`` reads it, the app and the command line show it: all of
them through ``AgentManifest``, so the fields, their types and their defaults are written down
once, here. ``AgentManifest.from_dict`` is the one validation: a foreign or corrupt manifest is
refused with a message that names the file and the field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from envs import ActionCodec, PaintConfig
from envs.storage import FileFormat
from spiral.experiment import DataSettings, RewardSettings
from spiral.network_config import NetworkConfig
from spiral.policy import check_temperature

AGENT_FORMAT = FileFormat("spiral-agent", 1, "spiral agent manifest")


@dataclass(frozen=True)
class TrainingRecord:
    """How far training went when the agent was exported."""

    iterations: int
    env_steps: int


@dataclass(frozen=True)
class DiscriminatorRecord:
    """The discriminator saved beside the policy (``discriminator.pt``); it judges canvases of
    ``size`` pixels, conditioned on targets when the agent is."""

    loss: str
    size: int
    width: int
    spectral_norm: bool


MAX_SAMPLE_TRIES = 16  # paintings per sample at most: a correction that rejects nearly all would cost this many


@dataclass(frozen=True)
class ClassMix:
    """A generator's correction of its class mix (``spiral.class_mix``): a sample that its own classifier
    (``mix_classifier.pt``) puts in class ``c`` is kept with probability ``accept[c]``, else painted again from a
    seed derived from its own, up to ``tries`` paintings in all; the last is kept whatever its class."""

    accept: tuple[float, ...]
    tries: int

    def __post_init__(self) -> None:
        if not isinstance(self.accept, tuple) or len(self.accept) < 2 or not all(
                isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
                for value in self.accept):
            raise ValueError(f"accept must list a probability in (0, 1] for each of 2 or more classes, got "
                             f"{self.accept!r}.")
        if isinstance(self.tries, bool) or not isinstance(self.tries, int) or not 1 <= self.tries <= MAX_SAMPLE_TRIES:
            raise ValueError(f"tries must be a whole number from 1 to {MAX_SAMPLE_TRIES}, got {self.tries!r}.")


@dataclass(frozen=True)
class AgentManifest:
    """The contents of ``agent.json``.

    The action space is not stored twice: ``action_names`` and ``action_nvec`` follow from
    ``env``. The file still lists them for people reading it, and ``from_dict`` refuses a file
    whose lists disagree with what this code's environment makes of its ``env``: its policy
    would not fit the actions.
    """

    name: str
    env: PaintConfig
    network: NetworkConfig
    conditional: bool  # reconstructs a target (True) or paints from scratch
    data: DataSettings = field(default_factory=DataSettings)  # the images it was trained on and how it saw them
    reward: RewardSettings | None = None
    discriminator: DiscriminatorRecord | None = None
    training: TrainingRecord | None = None  # None: never trained (random strokes)
    # The temperature its sampled paintings are drawn at unless a caller names another (spiral.agent):
    # 1 is the policy's own distribution; a generator may ship with a lower one chosen on validation.
    temperature: float = 1.0
    # The first stroke's temperature where it differs (None: the same). A generator's first stroke
    # decides much of what it paints (which digit): drawn from the policy's own distribution (1), the
    # mix of what it paints stays the data's while the later strokes are drawn at a lower temperature.
    first_stroke_temperature: float | None = None
    # A generator that redraws samples to paint its classes as often as its data has them (None: every sample is
    # kept); measured at the temperatures above.
    class_mix: ClassMix | None = None

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        if self.first_stroke_temperature is not None:
            check_temperature(self.first_stroke_temperature)
        if self.class_mix is not None and self.conditional:
            raise ValueError("class_mix corrects the samples of an agent that paints from scratch; this one "
                             "reconstructs targets.")

    @property
    def action_names(self) -> tuple[str, ...]:
        return ActionCodec(self.env).names

    @property
    def action_nvec(self) -> tuple[int, ...]:
        return tuple(ActionCodec(self.env).nvec.tolist())

    @property
    def untrained(self) -> bool:
        return self.training is None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, headed by the format and version ``from_dict`` checks."""
        def plain(value: Any) -> Any:
            return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value

        return AGENT_FORMAT.stamp({
            "name": self.name,
            "env": self.env.to_dict(),
            "network": self.network.to_dict(),
            "action_names": list(self.action_names),
            "action_nvec": list(self.action_nvec),
            "conditional": self.conditional,
            **{key: plain(getattr(self, key)) for key in ("data", "reward", "discriminator", "training")},
            "temperature": self.temperature,
            "first_stroke_temperature": self.first_stroke_temperature,
            "class_mix": plain(self.class_mix),
        })

    @classmethod
    def from_dict(cls, document: Any, source: str = "the agent manifest") -> AgentManifest:
        """A manifest from parsed JSON, or a ValueError that names ``source`` and the faulty field."""
        return cls._from_body(AGENT_FORMAT.check(document, source), source)

    @classmethod
    def read(cls, path: Path) -> AgentManifest:
        return cls._from_body(AGENT_FORMAT.read(path), str(path))

    @classmethod
    def _from_body(cls, body: dict[str, Any], source: str) -> AgentManifest:
        """A manifest from a document whose format header has been checked."""
        try:
            listed = {key: body.pop(key, None) for key in ("action_names", "action_nvec")}
            manifest = _decode_fields(cls, body, "")
            for key, value in listed.items():
                expected = list(getattr(manifest, key))
                if value != expected:
                    raise _FieldError(key, "is missing" if value is None else
                                      f"is {value!r}, but these env settings give {expected!r}")
        except _FieldError as error:
            problem = f"field {error.path!r} {error.problem}"
            raise ValueError(f"{source} does not describe a usable agent: {problem}.") from None
        return manifest


class _FieldError(Exception):
    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def _decode_fields(kind: type, value: dict[str, Any], path: str) -> Any:
    """The dataclass ``kind`` built field by field from a JSON object, refusing unknown and missing fields."""
    known = {f.name: f for f in fields(kind)}
    prefix = f"{path}." if path else ""
    if unknown := sorted(set(value) - set(known)):
        raise _FieldError(prefix + unknown[0], f"is not a field of {kind.__name__}; known: {sorted(known)}")
    for name, spec in known.items():
        if name not in value and spec.default is MISSING and spec.default_factory is MISSING:
            raise _FieldError(prefix + name, "is missing")
    hints = typing.get_type_hints(kind)
    decoded = {name: _decode(hints[name], item, prefix + name) for name, item in value.items()}
    try:
        return kind(**decoded)
    except (TypeError, ValueError) as error:  # a class that checks its own values (NetworkConfig)
        raise _FieldError(path or kind.__name__, f"is invalid: {str(error).rstrip('.')}") from None


def _decode(hint: Any, value: Any, path: str) -> Any:
    """``value`` (parsed JSON) as the type ``hint``, or a _FieldError naming where it is wrong.

    A dataclass with its own ``from_dict`` (``PaintConfig``) checks itself. Only the types a
    manifest holds are known here.
    """
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (hint,) = [option for option in options if option is not type(None)]
    if typing.get_origin(hint) is tuple:  # tuple[X, ...]: a JSON list of X
        if not isinstance(value, list):
            raise _FieldError(path, f"must be a JSON list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_decode(item, element, f"{path}[{index}]") for index, element in enumerate(value))
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _FieldError(path, f"must be a JSON object, got {value!r}")
        if not hasattr(hint, "from_dict"):
            return _decode_fields(hint, value, path)
        try:
            return hint.from_dict(value)
        except (TypeError, ValueError) as error:
            raise _FieldError(path, f"is invalid: {str(error).rstrip('.')}") from None
    accepted, wanted = _JSON_TYPES[hint]
    if not isinstance(value, accepted) or (hint is not bool and isinstance(value, bool)):
        raise _FieldError(path, f"must be {wanted}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # Python's json reads NaN and Infinity
        raise _FieldError(path, f"must be a finite number, got {value!r}")
    return value


# The JSON values each plain type accepts (a float field takes 2 as well as 2.0; nothing takes true for 1).
_JSON_TYPES = {bool: ((bool,), "true or false"), int: ((int,), "an integer"), float: ((int, float), "a number"),
               str: ((str,), "a string")}
