"""The trained agents that ship with the project, in ``agents/`` at the repository root.

Each is an exported agent folder (``agent.json`` plus plain ``state_dict`` files, a few hundred
KB), trained by a preset of ``train/presets`` with the command recorded in ``docs/RESULTS.md``.
``spiral paint`` and the app use them when no agent is named, so a fresh checkout paints.

``agents/`` installs as the package ``spiral.shipped_agents`` (and ``train/presets`` as
``spiral.presets``; see ``[tool.setuptools]`` in pyproject.toml), so these folders are found with
``importlib.resources`` in a checkout, an editable install and after ``pip install .`` alike.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from PIL import Image

from spiral.images import is_light_on_dark_line_art


def package_dir(package: str) -> Path:
    """The folder on disk that holds ``package``'s files (its data files included)."""
    folder = Path(str(files(package))).resolve()
    if not folder.is_dir():  # e.g. a zipped install, which setuptools does not make for spiral
        raise FileNotFoundError(f"{package} is not a folder on disk ({folder}): reinstall spiral (pip install .)")
    return folder


AGENTS_DIR = package_dir("spiral.shipped_agents")
RECONSTRUCTION_AGENT = "mnist-pen"  # the best shipped agent that reconstructs white-on-black line art
PHOTO_AGENT = "photos-paint"  # ... that reconstructs anything else, in colour
GENERATION_AGENT = "mnist-pen-gen"  # the best shipped agent that paints from scratch
# What each shipped agent is good at, in words for the app's sidebar (docs/RESULTS.md has the figures).
STRENGTHS = {
    "mnist-pen": "white-on-black handwriting and line drawings: digits best, letters and sketches too",
    "photos-paint": "the layout of any picture in colour, in 20 opaque pen strokes of 1 to 24 px, each in the "
                    "picture's own colour under it; not yet its details (trained on 12 photos)",
    "lfw-paint": "a face's oval, its light and shadow, hair and background; not yet eyes and mouth (the photo "
                 "agent adapted to scikit-image's 80 greyscale training faces)",
    "glyphs-pen": "white-on-black letters of many scripts, including ones it never saw",
    "mnist-pen-gen": "new handwritten digits, from scratch",
    "mnist-l2": "white-on-black digits, as blobs (the first RL-from-scratch agent, kept for comparison)",
    "mnist-recon": "white-on-black digits, as blobs (RL from scratch with the discriminator, kept for comparison)",
    "mnist-gen": "digit-like hooks from scratch (RL from scratch, kept for comparison)",
}


def shipped_agents() -> dict[str, Path]:
    """The shipped agent folders by name, the default ones first."""
    folders = {path.parent.name: path.parent for path in sorted(AGENTS_DIR.glob("*/agent.json"))}
    first = [name for name in (RECONSTRUCTION_AGENT, PHOTO_AGENT, GENERATION_AGENT) if name in folders]
    return {name: folders[name] for name in first + [name for name in folders if name not in first]}


def default_agent(conditional: bool, picture: Image.Image | None = None) -> Path:
    """The shipped agent to use when none is named: one that generates, or one that reconstructs
    ``picture``: the line agent for white-on-black line art, the colour agent for anything else."""
    if not conditional:
        name = GENERATION_AGENT
    elif picture is None or is_light_on_dark_line_art(picture):
        name = RECONSTRUCTION_AGENT
    else:
        name = PHOTO_AGENT
    folder = AGENTS_DIR / name
    if not (folder / "agent.json").is_file():
        raise FileNotFoundError(f"The shipped agent {name!r} is missing from {AGENTS_DIR}; pass --agent DIR, "
                                f"or train one with `spiral train --preset {name}`.")
    return folder
