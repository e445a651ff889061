"""Shared helpers: every test paints with the real libmypaint."""

from pathlib import Path

import numpy as np
import pytest

from envs import PaintEnv
from spiral.agent import untrained_agent, write_agent
from spiral.experiment import Experiment
from spiral.policy import NetworkConfig

TINY = NetworkConfig(input_size=16, channels=8, res_blocks=1, hidden=32, embedding=8)


def changed_mask(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Pixels whose colour changed between two canvases."""
    return (before != after).any(axis=-1)


def action(env: PaintEnv, **components: int) -> np.ndarray:
    """An action built by component name; components not named are 0."""
    vector = np.zeros(len(env.codec.names), np.int64)
    for name, value in components.items():
        vector[env.codec.index[name]] = value
    return vector


def cell(env: PaintEnv, row: int, col: int) -> int:
    return row * env.config.grid_size + col


@pytest.fixture
def env():
    environment = PaintEnv()
    environment.reset(seed=0)
    yield environment
    environment.close()


def export_untrained(folder: Path, preset: str, network: NetworkConfig = TINY, **info) -> Path:
    """An untrained agent of a preset, written as an exported agent folder (``info`` added to agent.json)."""
    experiment = Experiment.from_preset(preset)
    conditional = experiment.reward.conditional
    agent = untrained_agent(experiment.paint_config(), conditional, network)
    manifest = {"name": preset, "env": experiment.paint_config().to_dict(), "network": network.to_dict(),
                "action_names": list(agent.policy.names), "action_nvec": list(agent.policy.nvec),
                "conditional": conditional, "data": experiment.to_dict()["data"], **info}
    return write_agent(folder, agent.policy.state_dict(), {}, manifest)
