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


def package_dir(package: str) -> Path:
    """The folder on disk that holds ``package``'s files (its data files included)."""
    folder = Path(str(files(package))).resolve()
    if not folder.is_dir():  # e.g. a zipped install, which setuptools does not make for spiral
        raise FileNotFoundError(f"{package} is not a folder on disk ({folder}): reinstall spiral (pip install .)")
    return folder


AGENTS_DIR = package_dir("spiral.shipped_agents")
RECONSTRUCTION_AGENT = "mnist-pen"  # the best shipped agent that reconstructs targets
GENERATION_AGENT = "mnist-pen-gen"  # the best shipped agent that paints from scratch


def shipped_agents() -> dict[str, Path]:
    """The shipped agent folders by name, the default ones first."""
    folders = {path.parent.name: path.parent for path in sorted(AGENTS_DIR.glob("*/agent.json"))}
    first = [name for name in (RECONSTRUCTION_AGENT, GENERATION_AGENT) if name in folders]
    return {name: folders[name] for name in first + [name for name in folders if name not in first]}


def default_agent(conditional: bool) -> Path:
    """The shipped agent to use when none is named: one that reconstructs, or one that generates."""
    name = RECONSTRUCTION_AGENT if conditional else GENERATION_AGENT
    folder = AGENTS_DIR / name
    if not (folder / "agent.json").is_file():
        raise FileNotFoundError(f"The shipped agent {name!r} is missing from {AGENTS_DIR}; pass --agent DIR, "
                                f"or train one with `spiral train --preset {name}`.")
    return folder
