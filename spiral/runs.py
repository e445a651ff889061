"""Run folders: making a new one, reading the experiment of an old one, and holding one for a process.

No Ray here: the command line checks and holds a run folder before Ray starts, so a mistake or a
second window on the same run is refused in a moment. ``spiral.rllib.trainer`` trains in it.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from envs.storage import require_plain_name
from spiral.experiment import Experiment


def new_run_folder(runs_dir: Path, name: str) -> Path:
    """``runs_dir/name``, made now; an existing one is refused, never trained over, and so is a name with a
    path in it (``../x`` would put the run outside ``runs_dir``)."""
    folder = Path(runs_dir) / require_plain_name(name, "A run's name")
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise ValueError(f"{folder} exists: continue it with `spiral train --resume {folder}`, "
                         "or give the new run another name.") from None
    return folder


def run_experiment(run: Path) -> Experiment:
    """The experiment a run folder was started with, the run locked to this process (``lock_run``).

    Anything else, a run that another process has open included, is refused before Ray starts.
    """
    manifest = Path(run) / "experiment.json"
    if not manifest.is_file():
        raise ValueError(f"{run} is not a run folder: it has no experiment.json.")
    try:
        experiment = Experiment.from_dict(json.loads(manifest.read_text()))
    except json.JSONDecodeError as error:
        raise ValueError(f"{manifest} is not valid JSON ({error}): is it a spiral run folder?") from None
    except ValueError as error:
        raise ValueError(f"{manifest}: {error}") from None
    lock_run(run)  # experiment.json never changes once written: read first, so a bad one leaves no lock
    return experiment


def latest_checkpoint(run: Path) -> Path | None:
    """The newest of ``run/checkpoints/iter-NNNNNN`` (each written whole, or not at all), if any."""
    checkpoints = sorted((Path(run) / "checkpoints").glob("iter-*"))
    return checkpoints[-1] if checkpoints else None


def checkpoint_iteration(checkpoint: Path) -> int:
    """The training iteration a checkpoint folder ``iter-NNNNNN`` was saved at."""
    return int(checkpoint.name.split("-")[1])


LOCK_FILE = "run.lock"


def list_runs(runs_dir: Path | str) -> list[Path]:
    """The run folders (training or pretraining: those with an ``experiment.json``) directly under
    ``runs_dir``, the newest first (by when it started, so that the order stays while runs train); none
    for a folder that does not exist."""
    started = {path.parent: path.stat().st_mtime for path in Path(runs_dir).glob("*/experiment.json")}
    return sorted(started, key=lambda run: (started[run], run.name), reverse=True)


def last_written(run: Path) -> float:
    """When the run last wrote its logs or its experiment (a Unix time): its TensorBoard files grow as it trains."""
    files = [run / "experiment.json", *(run / "tb").glob("events.out.tfevents.*")]
    return max((path.stat().st_mtime for path in files if path.exists()), default=0.0)


def run_holder(run: Path) -> dict[str, Any] | None:
    """Who has the run open, as its lock file records it (``pid``, ``host``, ``since``, ``command``), without
    taking the lock; None when no process holds it. A record that a killed holder left behind, on this host,
    is not returned: that process is gone."""
    try:
        record = json.loads((Path(run) / LOCK_FILE).read_text() or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int) and not _alive(record["pid"]):
        return None
    return record


class RunInUseError(ValueError):
    """Another process has the run open: two trainers, or a trainer and an export, would corrupt its checkpoints."""


@dataclass
class _RunLock:
    path: Path
    fd: int  # the open lock file: closing it (or dying) lets go of the flock
    holders: int = 0  # holds taken in this process (hold_run), one per Trainer; the last release lets go


_LOCKS: dict[Path, _RunLock] = {}


def lock_run(run: Path) -> dict[str, Any] | None:
    """Hold the run folder ``run`` for this process; another process that asks is refused (``RunInUseError``).

    The lock is an ``flock`` on ``run/run.lock``, which the system lets go of when its holder dies,
    however it dies; the file records the holder's PID, host and command for the refusal message,
    and is removed when the holder lets go. A record left by a holder that died without letting go
    (killed, crashed) is taken over, with a message on stderr, and returned; otherwise None. Asking
    again in the same process is a no-op. The lock lasts until ``unlock_run``, until the last
    ``Trainer`` of the run in this process stops, or until the process exits.
    """
    key = Path(run).resolve()
    if key in _LOCKS:
        return None
    path = key / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the processes this one starts
        except OSError as error:
            raise ValueError(f"{run}: cannot open its lock file {path} ({error.strerror}); a run folder must be "
                             "writable to be trained or exported.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd, wait_s=0.5)  # a holder writes its record just after taking the lock
            os.close(fd)
            raise RunInUseError(_in_use_message(run, path, holder)) from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder let go and removed it between our open and our lock: open the new one
    previous = _lock_holder(fd)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now().isoformat(timespec="seconds"),
              "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else "python"}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _LOCKS[key] = _RunLock(path, fd)
    if previous is not None:
        print(f"spiral: {run}: taking over the lock of PID {previous.get('pid')} on {previous.get('host')} "
              f"(since {previous.get('since')}), which ended without letting go of it: it was killed or crashed. "
              "Its completed checkpoints are intact.", file=sys.stderr, flush=True)
    return previous


def hold_run(run: Path) -> None:
    """``lock_run``, counted: a Trainer holds its run until ``release_run``; a resumed Trainer in the
    same process shares the hold, and the run is let go of when the last one releases it."""
    lock_run(run)
    _LOCKS[Path(run).resolve()].holders += 1


def release_run(run: Path) -> None:
    """Give up one ``hold_run``; the last one lets go of the lock (nothing if none is held)."""
    lock = _LOCKS.get(Path(run).resolve())
    if lock is not None:
        lock.holders -= 1
        if lock.holders <= 0:
            unlock_run(run)


def unlock_run(run: Path) -> None:
    """Let go of this process's lock on ``run`` (nothing if it holds none), leaving no record to take over."""
    lock = _LOCKS.pop(Path(run).resolve(), None)
    if lock is not None:
        try:  # removed while still locked: whoever opened it meanwhile sees that it is gone (_same_file)
            lock.path.unlink(missing_ok=True)
        except OSError:
            os.ftruncate(lock.fd, 0)  # at least no record to take over
        finally:
            os.close(lock.fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@atexit.register
def _unlock_all() -> None:
    for run in list(_LOCKS):
        unlock_run(run)


def _lock_holder(fd: int, wait_s: float = 0.0) -> dict[str, Any] | None:
    """The record in a lock file, None while it holds none."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            record = json.loads(os.pread(fd, 4096, 0) or b"null")
        except ValueError:
            record = None
        if isinstance(record, dict) or time.monotonic() >= deadline:
            return record if isinstance(record, dict) else None
        time.sleep(0.05)


def _in_use_message(run: Path, path: Path, holder: dict[str, Any] | None) -> str:
    if holder is None:
        return (f"{run} is in use by another process (its lock file {path} is held). Wait for it to finish or stop "
                f"it, then try again; find it with `fuser {path}`.")
    pid, host = holder.get("pid"), holder.get("host")
    here = host == socket.gethostname()
    message = (f"{run} is in use by PID {pid} on {host} since {holder.get('since')} ({holder.get('command')}): "
               "two processes on one run would corrupt its checkpoints. Wait for that process to finish, or "
               f"stop it (Ctrl-C in its terminal, or `kill {pid}`{'' if here else f' on {host}'}), then try again; "
               "to train meanwhile, start a new run instead.")
    if here and isinstance(pid, int) and not _alive(pid):
        message += (f" PID {pid} has exited, but a process it started still holds the lock: find it with "
                    f"`fuser {path}`.")
    return message


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
