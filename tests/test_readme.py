"""The README is a contract: every command in its ``bash`` blocks runs as written.

The commands are read from the README itself (never copied here), run in order with ``bash`` from
the root of a copy of the repository (so relative paths are what a user types), and must exit 0.
Only budgets change, the way the README says: a ``train`` that names no ``--iterations`` stops
after 2, and a command that serves the app gets a free ``--port``, is waited on until healthy,
then stopped with SIGTERM; its port must close. ``scripts/test.sh`` is what runs this test, so it
is the one command left out.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import free_port, streamlit_server

ROOT = Path(__file__).resolve().parent.parent
SERVES_THE_APP = re.compile(r"(scripts/run\.sh|spiral app)\b")
TRAINS = re.compile(r"spiral train\b")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def readme_commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The command lines of the README's ``bash`` blocks, in order (a trailing ``\\`` joins lines)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", readme.read_text(), flags=re.S | re.M)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def with_budget(command: str, port: int) -> str:
    """The command with the README's documented budget: a free port for the app, 2 training iterations."""
    code, comment = (command.split(" #", 1) + [""])[:2]
    code = code.rstrip()
    if SERVES_THE_APP.search(code):
        code += f" --port {port}"
    elif TRAINS.search(code) and "--iterations" not in code:
        code += " --iterations 2"
    return code


def copy_of_repository(destination: Path) -> Path:
    """The files git tracks or would track (what a clone has, uncommitted edits included), and the venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    # The copy shares this venv. Bring it up to date from here first: run from the copy, bootstrap.sh
    # would find it stale (after a change to pyproject.toml or the lock) and re-point the editable
    # install at the copy, which the test deletes.
    subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=ROOT, check=True, capture_output=True)
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted in the work tree but still in the index is skipped
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    (destination / ".venv").symlink_to(Path(sys.prefix))
    return destination


def test_the_readme_parses_to_the_commands_a_newcomer_types():
    commands = readme_commands()
    assert any(command.startswith("bash scripts/run.sh") for command in commands)
    for needed in ("paint-random", "train --preset smoke", "train --resume", "paint --target", "eval", "export",
                   "replay", "spiral app"):
        assert any(needed in command for command in commands), f"the README's quick start lacks `{needed}`"
    assert with_budget(".venv/bin/spiral app   # a comment", 9) == ".venv/bin/spiral app --port 9"
    assert with_budget(".venv/bin/spiral train --preset x", 9).endswith("--iterations 2")
    assert with_budget(".venv/bin/spiral train --resume r --iterations 5", 9).endswith("--iterations 5")


def test_every_readme_command_runs_as_written(tmp_path):
    root = copy_of_repository(tmp_path / "spiral")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SPIRAL_", "PYTEST_"))}
    ran = []
    for command in readme_commands():
        if "scripts/test.sh" in command:
            continue
        port = free_port()
        runnable = with_budget(command, port)
        if SERVES_THE_APP.search(runnable):
            with streamlit_server(["bash", "-c", f"exec {runnable}"], port, cwd=root, env=env,
                                  log=tmp_path / f"app-{port}.log", start_timeout_s=300):
                pass
        else:
            result = subprocess.run(["bash", "-c", runnable], cwd=root, env=env, capture_output=True, text=True,
                                    timeout=600)
            assert result.returncode == 0, f"`{runnable}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        ran.append(runnable)
    assert len(ran) >= 10
    # What the commands said they made is there, under the copy's root, by the relative paths shown.
    assert (root / "output" / "painting.json").is_file() and (root / "output" / "painting-pen.png").is_file()
    assert (root / "runs" / "first-run" / "agent" / "agent.json").is_file()
    assert sorted(path.name for path in (root / "runs" / "first-run" / "checkpoints").glob("iter-*"))[-1] == \
        "iter-000005"
    assert (root / "output" / "first" / "painting.png").is_file()
