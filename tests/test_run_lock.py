"""One process per run folder: a second `spiral train --resume` (or an export) is refused, not left to
corrupt the checkpoints; the lock of a process that died is taken over. No Ray: the lock is taken
before Ray starts."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from spiral.experiment import Experiment
from spiral.runs import LOCK_FILE, RunInUseError, lock_run, run_experiment, unlock_run

SPIRAL = shutil.which("spiral", path=os.path.dirname(sys.executable))
PYTHON_ENV = os.environ | {"PYTHONPATH": os.getcwd()}


@pytest.fixture
def run(tmp_path):
    """A run folder as `spiral train` leaves it before its first checkpoint; unlocked after the test."""
    folder = tmp_path / "smoke-run"
    folder.mkdir()
    (folder / "experiment.json").write_text(Experiment.from_preset("smoke").to_json())
    yield folder
    unlock_run(folder)


def held(run) -> bool:
    """Whether some process holds the run's lock (a second open file conflicts even within one process)."""
    if not (run / LOCK_FILE).exists():
        return False
    fd = os.open(run / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def holder_process(run, then: str) -> subprocess.Popen:
    """Another Python process that takes the run's lock through the same function, says so, then ``then``."""
    code = (f"import os, sys\nfrom spiral.runs import lock_run\nlock_run({str(run)!r})\n"
            f"print('locked', flush=True)\n{then}\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=PYTHON_ENV)
    assert process.stdout.readline().strip() == "locked", process.stderr.read()
    return process


def test_the_lock_records_its_holder_and_a_clean_release_leaves_nothing_to_take_over(run, capsys):
    assert lock_run(run) is None
    record = json.loads((run / LOCK_FILE).read_text())
    assert record["pid"] == os.getpid() and record["host"] and record["since"]
    assert held(run)
    assert lock_run(run) is None and held(run)  # asking again in the holding process changes nothing
    unlock_run(run)
    assert not held(run) and not (run / LOCK_FILE).exists()
    assert lock_run(run) is None and "taking over" not in capsys.readouterr().err


def test_a_second_process_is_refused_and_takes_over_once_the_holder_is_killed(run, capsys):
    holder = holder_process(run, then="sys.stdin.read()")  # holds until killed
    try:
        with pytest.raises(RunInUseError) as refused:
            lock_run(run)
        message = str(refused.value)
        assert f"{run} is in use by PID {holder.pid}" in message and f"kill {holder.pid}" in message
        assert "try again" in message
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to let go: as a crash or an OOM kill
        holder.communicate(timeout=30)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid  # its record is left behind
    previous = lock_run(run)
    assert previous["pid"] == holder.pid
    assert f"taking over the lock of PID {holder.pid}" in capsys.readouterr().err
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_process_that_exits_lets_go_of_the_run(run, capsys):
    holder = holder_process(run, then="")
    assert holder.wait(timeout=60) == 0
    assert not (run / LOCK_FILE).exists()
    assert lock_run(run) is None and "taking over" not in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train", "--resume", "{run}"], ["export", "{run}", "--out", "{run}/out"]],
                         ids=["train --resume", "export"])
def test_spiral_refuses_a_run_that_another_process_holds_before_ray_starts(run, command):
    lock_run(run)  # this test's process is the one training it
    started = time.monotonic()
    result = subprocess.run([SPIRAL, *(part.format(run=run) for part in command)], capture_output=True, text=True,
                            timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"spiral {command[0]}: error: {run} is in use by PID {os.getpid()}" in result.stderr
    assert "Traceback" not in output and "Started a local Ray instance" not in output
    assert not (run / "checkpoints").exists() and not (run / "out").exists()
    assert time.monotonic() - started < 60
    assert held(run) and json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()  # still ours


def test_a_folder_that_is_not_a_run_gets_no_lock_file(tmp_path):
    with pytest.raises(ValueError, match="is not a run folder"):
        run_experiment(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()


def test_reading_a_run_takes_its_lock(run):
    assert run_experiment(run) == Experiment.from_preset("smoke")
    assert held(run) and json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_lock_file_removed_between_open_and_lock_is_opened_again(run, monkeypatch):
    """A holder that lets go removes the file: a lock on the removed file would lock nothing."""
    real_flock, calls = fcntl.flock, []

    def flock_just_after_the_holder_let_go(fd, operation):
        if not calls:
            (run / LOCK_FILE).unlink()
        calls.append(fd)
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_just_after_the_holder_let_go)
    assert lock_run(run) is None
    assert len(calls) == 2 and held(run)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
