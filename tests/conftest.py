"""Shared helpers: every test paints with the real libmypaint."""

import numpy as np
import pytest

from envs import PaintEnv


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
