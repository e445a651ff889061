"""Pictures of what an agent paints, for a README or a results page: a grid and a replay.

A grid shows many paintings at once, so a reader sees at a glance whether an agent paints
digits, scribbles or nothing; a replay shows how it paints them, stroke by stroke, re-rendered
with the real brush at a larger scale. Both come from ``spiral gallery``, so every figure of
``docs/RESULTS.md`` can be made again with one command.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from envs.media import enlarge, write_painting
from spiral.agent import Agent, Episode

TILE = 128  # pixels per painting in a grid
GAP = 4


def paint_many(agent: Agent, targets: np.ndarray | None, count: int, greedy: bool) -> list[Episode]:
    """``count`` episodes: one per target for a conditional agent, seeds 0.. for one that is not."""
    if agent.conditional:
        if targets is None or len(targets) < count:
            raise ValueError(f"A conditional agent needs {count} targets, got {0 if targets is None else len(targets)}.")
        return agent.paint_all(targets[:count], greedy=greedy)
    return agent.paint_all(seeds=range(count), greedy=greedy)


def grid(rows: list[list[np.ndarray]], tile: int = TILE) -> Image.Image:
    """Canvases laid out in rows, each enlarged crisply to ``tile`` pixels, on a grey ground."""
    columns = max(len(row) for row in rows)
    picture = Image.new("RGB", (columns * (tile + GAP) + GAP, len(rows) * (tile + GAP) + GAP), (128, 128, 128))
    for r, row in enumerate(rows):
        for c, canvas in enumerate(row):
            picture.paste(enlarge(canvas, tile).resize((tile, tile)), (GAP + c * (tile + GAP), GAP + r * (tile + GAP)))
    return picture


def painting_grid(episodes: list[Episode], per_row: int = 8) -> Image.Image:
    """Targets over their paintings for a conditional agent, rows of samples for one that is not."""
    rows = []
    for start in range(0, len(episodes), per_row):
        chunk = episodes[start:start + per_row]
        if chunk[0].target is not None:
            rows.append([episode.target for episode in chunk])
        rows.append([episode.canvas for episode in chunk])
    return grid(rows)


def write_gallery(agent: Agent, out: str | Path, targets: np.ndarray | None = None, count: int = 16,
                  greedy: bool = True, scale: float = 4.0) -> dict[str, Path]:
    """Write ``grid.png`` (``count`` paintings) and ``replay.*`` (the first, stroke by stroke, at ``scale``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    episodes = paint_many(agent, targets, count, greedy)
    paths = {"grid": out / "grid.png"}
    painting_grid(episodes).save(paths["grid"])
    replay = write_painting(episodes[0].program, out, name="replay", scale=scale)
    paths.update({f"replay {kind}": path for kind, path in replay.items()})
    if episodes[0].target is not None:
        paths["replay target"] = out / "replay-target.png"
        Image.fromarray(episodes[0].target).save(paths["replay target"])
    return paths
