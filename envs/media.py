"""Files people look at: a painting program written out as PNG, animated GIF, JSON and SVG."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from envs.program import Program
from envs.storage import require_plain_name


def enlarge(canvas: np.ndarray, size: int) -> Image.Image:
    """Nearest-neighbour enlargement to about ``size`` pixels, so a 64 px canvas stays crisp."""
    height, width = canvas.shape[:2]
    factor = max(1, size // max(height, width))
    return Image.fromarray(canvas).resize((width * factor, height * factor), Image.Resampling.NEAREST)


def save_png(canvas: np.ndarray, path: str | Path) -> Path:
    Image.fromarray(canvas).save(path)
    return Path(path)


def save_gif(frames: Iterable[np.ndarray], path: str | Path, frame_ms: int = 200, hold_last_ms: int = 1500) -> Path:
    """An endlessly looping animation; the finished painting stays up for ``hold_last_ms``."""
    images = [Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE) for frame in frames]
    if not images:
        raise ValueError("A GIF needs at least one frame.")
    durations = [frame_ms] * (len(images) - 1) + [hold_last_ms]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, disposal=1)
    return Path(path)


def write_painting(program: Program, folder: str | Path, name: str = "painting", scale: float = 4.0) -> dict[str, Path]:
    """Write ``name``.png/.gif (rendered ``scale`` times larger with the real brush), .json, .svg.

    ``name`` is a plain name: with a path in it (``../x``) the files would land outside ``folder``."""
    require_plain_name(name, "The files' name")
    program.surface_size(scale)  # a scale over the pixel budget is refused before anything is written
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = list(program.frames(scale))
    paths = {
        "png": save_png(frames[-1], folder / f"{name}.png"),
        "gif": save_gif(frames, folder / f"{name}.gif"),
        "json": folder / f"{name}.json",
        "svg": folder / f"{name}.svg",
    }
    program.save(paths["json"])
    paths["svg"].write_text(program.to_svg(scale))
    return paths
