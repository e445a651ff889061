"""The inference API: load an exported agent and let it paint, without Ray.

An exported agent is a folder of plain files that anyone can inspect:

- ``agent.json``: what the agent paints with and was trained on (environment settings, network
  sizes, action space, dataset, training counters);
- ``policy.pt`` and ``discriminator.pt``: ``state_dict``s saved with ``torch.save``, loaded with
  ``torch.load(weights_only=True)``: a file that is not plain tensors is refused, never unpickled.

``write_agent`` writes such a folder atomically; ``load_agent`` reads one back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from envs import ActionCodec, PaintConfig, PaintEnv, Program
from spiral.policy import NetworkConfig, PolicyNetwork

FORMAT = "spiral-agent"
VERSION = 1


@dataclass
class Episode:
    """One painting: its stroke program, every canvas along the way, and the target if any."""

    program: Program
    frames: list[np.ndarray]  # the blank canvas, then the canvas after each stroke
    target: np.ndarray | None = None
    l2: float | None = None  # mean squared error to the target, pixels in [0, 1]
    actions: list[list[int]] = field(default_factory=list)

    @property
    def canvas(self) -> np.ndarray:
        return self.frames[-1]


class Agent:
    """A trained (or untrained) policy with the environment settings it paints with."""

    def __init__(self, policy: PolicyNetwork, paint_config: PaintConfig, info: dict[str, Any]):
        self.policy = policy.eval()
        self.paint_config = paint_config
        self.info = info

    @property
    def conditional(self) -> bool:
        return self.policy.conditional

    def prepare_target(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """Any image as the agent sees targets: canvas-sized uint8 RGB, greyscale if it was trained so."""
        picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        color = self.info.get("data", {}).get("color", False)
        picture = picture.convert("RGB" if color else "L")
        height, width = self.paint_config.canvas_size
        # Keep the aspect ratio: a very wide or tall image is letterboxed with the canvas colour.
        background = tuple(self.paint_config.background)
        picture = ImageOps.pad(picture, (width, height), Image.Resampling.LANCZOS,
                               color=background if color else round(sum(background) / 3))
        array = np.asarray(picture)
        return array if color else np.repeat(array[..., None], 3, axis=-1)

    @torch.no_grad()
    def paint(self, target: np.ndarray | Image.Image | None = None, seed: int | None = None,
              greedy: bool = False) -> Episode:
        """Paint one episode; conditional agents need a ``target`` (any size: it is resized)."""
        if self.conditional and target is None:
            raise ValueError("This agent reconstructs targets: pass target=<image>.")
        if not self.conditional and target is not None:
            raise ValueError("This agent paints from scratch and takes no target.")
        prepared = None if target is None else self.prepare_target(target)
        env = PaintEnv(self.paint_config, target_source=None if prepared is None else prepared[None])
        generator = torch.Generator().manual_seed(seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63))
        try:
            observation, _ = env.reset(seed=seed, options=None if prepared is None else {"target": prepared})
            state = self.policy.initial_state(1)
            frames, actions, terminated = [observation["canvas"]], [], False
            while not terminated:
                batch = {key: torch.as_tensor(value)[None, None] for key, value in observation.items()}
                features, state = self.policy.features(batch, state)
                action = self.policy.sample(features, greedy=greedy, generator=generator)[0][0, 0].numpy()
                observation, _, terminated, _, _ = env.step(action)
                frames.append(observation["canvas"])
                actions.append(action.tolist())
            l2 = env.l2() if prepared is not None else None
            return Episode(env.program, frames, prepared, l2, actions)
        finally:
            env.close()


def write_agent(folder: str | Path, policy_state: dict[str, torch.Tensor], discriminator_state: dict[str, torch.Tensor],
                info: dict[str, Any]) -> Path:
    """Write an agent folder atomically: a reader sees the old folder or the new one, never half."""
    def fill(staging: Path) -> None:
        torch.save(policy_state, staging / "policy.pt")
        torch.save(discriminator_state, staging / "discriminator.pt")
        (staging / "agent.json").write_text(json.dumps({"format": FORMAT, "version": VERSION, **info}, indent=2))

    return write_folder(folder, fill)


def write_folder(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Replace ``folder`` with what ``fill`` writes into an empty staging folder, atomically.

    The staging folder sits next to ``folder`` (same file system, so ``os.replace`` is a rename);
    if ``fill`` fails, nothing of ``folder`` changes and the staging folder is removed.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        fill(staging)
        if folder.exists():
            retired = folder.with_name(f".{folder.name}-old")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(folder, retired)
            os.replace(staging, folder)
            shutil.rmtree(retired)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def load_agent(path: str | Path) -> Agent:
    """An agent from an exported folder, refusing anything else with a message that says why."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"No agent folder at {folder}.")
    manifest = folder / "agent.json"
    if not manifest.is_file():
        raise ValueError(f"{folder} is not a spiral agent: it has no agent.json (export one with `spiral export`).")
    try:
        info = json.loads(manifest.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{manifest} is corrupt: {error}") from error
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{manifest} is not a spiral agent manifest (format {FORMAT!r} expected).")
    if info.get("version") != VERSION:
        raise ValueError(f"{manifest} has version {info.get('version')!r}; this spiral reads version {VERSION}.")
    try:
        paint_config = PaintConfig.from_dict(info["env"])
        policy = PolicyNetwork(tuple(info["action_names"]), tuple(info["action_nvec"]), paint_config.grid_size,
                               bool(info["conditional"]), NetworkConfig(**info["network"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{manifest} does not describe a usable agent: {error}") from error
    try:
        policy.load_state_dict(load_weights(folder / "policy.pt"))
    except RuntimeError as error:  # shapes or names that do not match agent.json
        raise ValueError(f"{folder / 'policy.pt'} does not fit the network agent.json describes: {error}") from error
    return Agent(policy, paint_config, info)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A ``state_dict`` saved with ``torch.save``, read with ``weights_only=True``: plain tensors or a ValueError."""
    if not path.is_file():
        raise ValueError(f"{path.parent} has no {path.name}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for corrupt or unsafe files
        raise ValueError(f"{path} is not a plain tensor state_dict (corrupt or unsafe file): {error}") from error
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"{path} is not a state_dict of tensors.")
    return state


def untrained_agent(paint_config: PaintConfig, conditional: bool, network: NetworkConfig = NetworkConfig(),
                    seed: int = 0) -> Agent:
    """A randomly initialised agent: what the app shows before any agent is trained."""
    torch.manual_seed(seed)
    codec = ActionCodec(paint_config)
    policy = PolicyNetwork(codec.names, tuple(codec.nvec.tolist()), paint_config.grid_size, conditional, network)
    return Agent(policy, paint_config, {"untrained": True, "data": {"color": paint_config.use_color}})
