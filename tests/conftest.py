"""Shared helpers: every test paints with the real libmypaint."""

import contextlib
import json
import os
import pickle
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from envs import PaintEnv
from envs.storage import FileFormat
from spiral.agent import untrained_agent, write_agent
from spiral.experiment import Experiment
from spiral.network_config import NetworkConfig

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


def export_untrained(folder: Path, preset: str, network: NetworkConfig = TINY, **details) -> Path:
    """An untrained agent of a preset, written as an exported agent folder (``details``: more AgentManifest fields)."""
    experiment = Experiment.from_preset(preset)
    agent = untrained_agent(experiment.paint_config(), experiment.reward.conditional, network, name=preset,
                            **{"data": experiment.data} | details)
    return write_agent(folder, agent.policy.state_dict(), {}, agent.manifest)


EXPLOIT_MARKER = "pwned"  # the file a malicious weights file of damaged_folders() creates beside the folder


def damaged_folders(document: FileFormat, manifest: str, weights: str, key: str) -> list:
    """Ways to damage a saved folder (an agent's, a classifier's) and the reason each must be refused for.

    ``manifest`` is its JSON file of format ``document``, ``weights`` a state_dict file holding ``key``.
    One is a pickle that runs code when loaded unsafely: it would create ``EXPLOIT_MARKER``.
    """
    def write(name: str, data: bytes):
        return lambda folder: (folder / name).write_bytes(data)

    newer = json.dumps({"format": document.name, "version": document.version + 1}).encode()
    return [
        (write(manifest, b"{not json"), f"{manifest} is not valid JSON"),
        (write(manifest, b"\xff\xfe"), f"{manifest} is not UTF-8 text"),
        (write(manifest, b'{"format": "other"}'), f"Not a {document.description}: .*{manifest} has format 'other'"),
        (write(manifest, newer), f"version {document.version + 1} in .*{manifest}"),
        (write(weights, b"garbage"), f"{weights} is not a plain tensor"),
        (lambda folder: (folder / weights).unlink(), f"has no {weights}"),
        (write(weights, pickle.dumps({"a": object()})), "not a plain tensor"),
        (lambda folder: torch.save({key: torch.zeros(1)}, folder / weights), "does not fit"),
        (lambda folder: torch.save({key: _Exploit(folder.parent / EXPLOIT_MARKER)}, folder / weights),
         "corrupt or unsafe"),
    ]


class _Exploit:
    """Unpickling it creates ``marker``: what a malicious weights file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """Every process a test starts (Ray, Streamlit, chromium, the CLI) is gone when the run ends."""
    from tests.processes import describe, descendants

    before = descendants()
    yield
    deadline = time.monotonic() + 30  # Ray's daemons take a few seconds to exit after ray.shutdown()
    while (left := descendants() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    report = describe(left)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, "the tests left processes running (now killed):\n" + "\n".join(report)
