"""Which agents the app can offer: the shipped ones, exported ones under the runs folder, and
untrained presets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from spiral.agent import Agent, load_agent, untrained_agent
from spiral.experiment import PRESET_DIR, Experiment
from spiral.shipped import AGENTS_DIR, STRENGTHS, shipped_agents

UNTRAINED_PREFIX = "untrained: "
SHIPPED_PREFIX = "shipped: "
AUTOMATIC = "automatic: the shipped agent for the picture"  # spiral.shipped.default_agent chooses


@dataclass(frozen=True)
class AgentChoice:
    label: str
    source: str  # an agent folder, or "preset:<name>" for an untrained agent


def runs_dir() -> Path:
    return Path(os.environ.get("SPIRAL_RUNS_DIR", "runs"))


def available_agents(runs: Path | None = None) -> list[AgentChoice]:
    """Shipped agents, then exported ones (``runs/*/agent``, ``runs/*/best``) newest first, then untrained presets."""
    runs = runs or runs_dir()
    shipped = [AgentChoice(f"{SHIPPED_PREFIX}{name}", str(folder)) for name, folder in shipped_agents().items()]
    folders = sorted(runs.glob("*/*/agent.json"), key=lambda path: path.stat().st_mtime, reverse=True)
    exported = [AgentChoice(f"{path.parent.parent.name}/{path.parent.name}", str(path.parent)) for path in folders]
    presets = sorted(path.stem for path in PRESET_DIR.glob("*.toml") if path.stem != "smoke")
    return shipped + exported + [AgentChoice(f"{UNTRAINED_PREFIX}{name}", f"preset:{name}") for name in presets]


def open_agent(source: str) -> Agent:
    """An exported agent folder, or an untrained agent built from a preset (``preset:NAME``)."""
    if source.startswith("preset:"):
        experiment = Experiment.from_preset(source.removeprefix("preset:"))
        return untrained_agent(experiment.paint_config(), experiment.reward.conditional, experiment.network_config(),
                               name=experiment.name, data=experiment.data)
    return load_agent(source)


def without_server_paths(message: str) -> str:
    """An error message for the page: the folders of this installation and of the runs folder said relative
    (``agents/NAME``, ``runs/RUN``), so the page does not show where the server keeps its files."""
    for folder, shown in ((runs_dir().resolve(), runs_dir().name), (AGENTS_DIR.resolve().parent, "")):
        message = message.replace(f"{folder}/", f"{shown}/" if shown else "").replace(str(folder), shown or ".")
    return message


def short_name(source: str) -> str:
    """A label for captions: ``run/best`` for a folder, ``shipped NAME``, or ``untrained NAME`` for a preset."""
    if source.startswith("preset:"):
        return f"untrained {source.removeprefix('preset:')}"
    path = Path(source)
    if path.parent == AGENTS_DIR:
        return f"shipped {path.name}"
    return f"{path.parent.name}/{path.name}"


def describe(agent: Agent, source: str) -> dict[str, str]:
    """What a person wants to know about an agent, in words; ``source`` as ``open_agent`` takes it."""
    manifest, config = agent.manifest, agent.paint_config
    path = Path(source)
    shipped = STRENGTHS.get(path.name) if path.parent == AGENTS_DIR else None
    return {
        "agent": manifest.name + (" (UNTRAINED: random strokes)" if manifest.untrained else ""),
        "task": "reconstructs a target" if agent.conditional else "paints from scratch",
        "trained on": manifest.data.dataset + (" in colour" if manifest.data.color else ""),
        "good at": shipped or ("nothing yet" if manifest.untrained else f"pictures like {manifest.data.dataset}'s"),
        "canvas": f"{config.width}x{config.height} px, {config.episode_length} strokes, brush {config.brush}",
        "training": f"{manifest.training.env_steps:,} env steps" if manifest.training else "none",
    }
