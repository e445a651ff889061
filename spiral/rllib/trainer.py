"""Runs an experiment: one run folder, atomic checkpoints, TensorBoard, exports, resume.

A run folder holds ``experiment.json`` (what was asked), ``checkpoints/iter-NNNNNN`` (RLlib
checkpoints, the last ``keep`` of them, each written under a temporary name and renamed when
complete), ``agent/`` (the latest exported agent, plain state_dicts: see ``spiral.agent``),
``best/`` (the export with the lowest held-out L2, conditional runs only), all three written with
``envs.storage.write_folder`` so that none is ever seen half-written, ``tb/``
(TensorBoard scalars and image grids) and ``run.lock`` (one process at a time: ``lock_run``).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core import DEFAULT_MODULE_ID
from tensorboardX import SummaryWriter
from tqdm import tqdm

from envs.storage import write_file, write_folder
from spiral.agent import load_agent, write_agent
from spiral.evaluation import blank_score
from spiral.experiment import Experiment
from spiral.manifest import AgentManifest, DiscriminatorRecord, TrainingRecord
from spiral.rllib.algorithm import build_config
from spiral.rllib.module import DISCRIMINATOR_ID


class PaintingMetrics(RLlibCallback):
    """Logs the final canvas's distance to its target (conditional environments)."""

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        infos = episode.get_infos()
        if infos and "l2" in infos[-1]:
            metrics_logger.log_value("final_l2", float(infos[-1]["l2"]))


def new_run_folder(runs_dir: Path, name: str) -> Path:
    """``runs_dir/name``, made now; an existing one is refused, never trained over."""
    folder = Path(runs_dir) / name
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


LOCK_FILE = "run.lock"


class RunInUseError(ValueError):
    """Another process has the run open: two trainers, or a trainer and an export, would corrupt its checkpoints."""


@dataclass
class _RunLock:
    path: Path
    fd: int  # the open lock file: closing it (or dying) lets go of the flock
    trainers: int = 0  # Trainers of this process on the run; when the last one stops, the lock goes


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


def latest_checkpoint(run: Path) -> Path | None:
    checkpoints = sorted((run / "checkpoints").glob("iter-*"))
    return checkpoints[-1] if checkpoints else None


class Trainer:
    """Owns the algorithm of one run; ``run()`` trains until the iteration or time budget."""

    def __init__(self, run: Path, experiment: Experiment, *, min_time_s_per_iteration: float = 1.0):
        # Absolute once, here: RLlib writes checkpoints through pyarrow, which refuses relative paths.
        self.run_dir, self.experiment = Path(run).resolve(), experiment
        lock_run(self.run_dir)  # refused here, before RLlib builds anything, if another process has the run
        _LOCKS[self.run_dir].trainers += 1
        self._holds_lock = True
        try:
            self._open(min_time_s_per_iteration)
        except BaseException:
            self._let_go_of_run()
            raise

    def _open(self, min_time_s_per_iteration: float) -> None:
        experiment = self.experiment
        config = build_config(experiment, min_time_s_per_iteration=min_time_s_per_iteration).callbacks(PaintingMetrics)
        self.algo = config.build_algo()
        self.iteration = 0
        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is not None:
            self.algo.restore_from_path(checkpoint)
            self.iteration = int(checkpoint.name.split("-")[1])
            # The restore's own push to the env runners is dropped while the build's is in flight:
            # wait for the checkpoint's policy to reach them, or they sample with the start weights.
            self.algo.env_runner_group.sync_weights(
                policies=[DEFAULT_MODULE_ID], from_worker_or_learner_group=self.algo.learner_group,
                timeout_seconds=60, inference_only=True)
        self.writer = SummaryWriter(str(self.run_dir / "tb"))
        self._last_log: tuple[float, int | None] = (time.monotonic(), None)  # for env steps/s
        self.best_l2 = float("inf")
        self.test_targets = self._evaluation_targets() if experiment.reward.conditional else None
        if self.test_targets is not None:
            self.blank_l2 = blank_score(experiment.paint_config(), self.test_targets).mean

    def _evaluation_targets(self) -> np.ndarray:
        """32 held-out targets; a folder too small to hold any out lends its training images."""
        held_out = self.experiment.images("test")
        return (held_out if len(held_out) else self.experiment.images("train"))[:32]

    @classmethod
    def start(cls, experiment: Experiment, runs_dir: Path, name: str | None = None, **kwargs) -> Trainer:
        """A new run in ``runs_dir/name`` (default: ``<experiment>-<time>``)."""
        run = new_run_folder(runs_dir, name or f"{experiment.name}-{datetime.now():%Y%m%d-%H%M%S}")
        lock_run(run)  # before experiment.json makes it a run that `--resume` could open
        try:
            write_file(run / "experiment.json", lambda staging: staging.write_text(experiment.to_json()))
            return cls(run, experiment, **kwargs)
        except BaseException:
            unlock_run(run)
            raise

    @classmethod
    def resume(cls, run: Path, **kwargs) -> Trainer:
        return cls(Path(run), run_experiment(run), **kwargs)

    def run(self, iterations: int | None = None, progress: bool = True,
            on_iteration: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
        """Train to ``iterations`` (default: the experiment's), checkpointing as configured."""
        settings = self.experiment.training
        total = iterations if iterations is not None else settings.iterations
        started, result = time.monotonic(), {}
        bar = tqdm(total=total, initial=self.iteration, disable=not progress, desc=self.experiment.name, unit="it")
        saved = self.iteration
        try:
            while self.iteration < total:
                result = self.algo.train()
                self.iteration += 1
                self._log(result)
                bar.update(1)
                bar.set_postfix(self._summary(result), refresh=False)
                if on_iteration:
                    on_iteration(self.iteration, result)
                out_of_time = settings.time_budget_s is not None and time.monotonic() - started > settings.time_budget_s
                if self.iteration % self.experiment.checkpoint.every == 0 or self.iteration == total or out_of_time:
                    self.checkpoint(result)
                    saved = self.iteration
                if out_of_time:
                    break
        except KeyboardInterrupt:
            if self.iteration > saved:  # Ctrl-C: keep what was trained, then stop as asked
                bar.write(f"interrupted: checkpointing iteration {self.iteration} before stopping")
                self.checkpoint(result)
            raise
        finally:
            bar.close()
        return result

    @staticmethod
    def _summary(result: dict) -> dict[str, str]:
        runners, learners = result.get("env_runners", {}), result.get("learners", {})
        summary = {"steps": f"{int(result.get('num_env_steps_sampled_lifetime', 0)):,}"}
        l2, gap = runners.get("final_l2", np.nan), learners.get(DISCRIMINATOR_ID, {}).get("wasserstein", np.nan)
        if np.isfinite(l2):  # an iteration without finished episodes or updates reports nothing
            summary["l2"] = f"{l2:.4f}"
        if np.isfinite(gap):
            summary["D(real)-D(fake)"] = f"{gap:.3f}"
        return summary

    def _log(self, result: dict) -> None:
        step = int(result.get("num_env_steps_sampled_lifetime", self.iteration))
        # Measured here: RLlib's own throughput metric is not in the result in this version.
        now, (then, before) = time.monotonic(), self._last_log
        self._last_log = (now, step)
        scalars = {"env/steps_per_s": (step - before) / (now - then) if before is not None else None}
        for key, value in result.get("env_runners", {}).items():
            if key in ("final_l2", "episode_return_mean", "episode_len_mean"):
                scalars[f"env/{key}"] = value
        for module in (DEFAULT_MODULE_ID, DISCRIMINATOR_ID):
            for key, value in result.get("learners", {}).get(module, {}).items():
                if np.isscalar(value) and not key.startswith(("num_", "weights_seq", "default_optimizer")):
                    scalars[f"{'policy' if module == DEFAULT_MODULE_ID else 'discriminator'}/{key}"] = value
        for key, value in scalars.items():
            if value is not None and np.isfinite(value):
                self.writer.add_scalar(key, float(value), step)
        self.writer.flush()

    def checkpoint(self, result: dict) -> Path:
        """An atomic RLlib checkpoint, the exported agent, the best export, image grids."""
        folder = self.run_dir / "checkpoints"
        final = write_folder(folder / f"iter-{self.iteration:06d}",
                             lambda staging: self.algo.save_to_path(str(staging)))
        for old in sorted(folder.glob("iter-*"))[: -self.experiment.checkpoint.keep]:
            shutil.rmtree(old)
        agent_dir = self.export(self.run_dir / "agent", result)
        self._paint_samples(agent_dir, int(result.get("num_env_steps_sampled_lifetime", self.iteration)))
        return final

    def export(self, folder: Path, result: dict | None = None) -> Path:
        weights = self.algo.learner_group.get_weights([DEFAULT_MODULE_ID, DISCRIMINATOR_ID])
        policy, discriminator = (_network_weights(weights[module]) for module in (DEFAULT_MODULE_ID, DISCRIMINATOR_ID))
        experiment, paint = self.experiment, self.experiment.paint_config()
        settings = experiment.discriminator
        manifest = AgentManifest(
            experiment.name, paint, experiment.network_config(), experiment.reward.conditional,
            data=experiment.data, reward=experiment.reward,
            discriminator=DiscriminatorRecord(settings.loss, paint.width, settings.width, settings.spectral_norm),
            training=TrainingRecord(self.iteration, int((result or {}).get("num_env_steps_sampled_lifetime", 0))),
        )
        return write_agent(folder, policy, discriminator, manifest)

    def _paint_samples(self, agent_dir: Path, step: int) -> None:
        """Paint with the export (this also checks it loads): a grid in TensorBoard, the best kept."""
        agent = load_agent(agent_dir)
        if self.test_targets is None:
            episodes = [agent.paint(seed=seed) for seed in range(8)]
        else:
            episodes = [agent.paint(target, seed=seed) for seed, target in enumerate(self.test_targets)]
            l2 = float(np.mean([episode.l2 for episode in episodes]))
            self.writer.add_scalar("eval/test_l2", l2, step)
            self.writer.add_scalar("eval/blank_l2", self.blank_l2, step)  # the floor to beat, on the same images
            if l2 < self.best_l2:
                self.best_l2 = l2
                # Swapped in whole: a reader of best/ (the app) sees the previous best or this one.
                write_folder(self.run_dir / "best",
                             lambda staging: shutil.copytree(agent_dir, staging, dirs_exist_ok=True))
        rows = [np.concatenate([episode.canvas for episode in episodes[:8]], axis=1)]
        if self.test_targets is not None:
            rows.insert(0, np.concatenate(list(self.test_targets[:8]), axis=1))
        self.writer.add_image("paintings", np.concatenate(rows, axis=0), step, dataformats="HWC")
        self.writer.flush()

    def stop(self) -> None:
        try:
            self.writer.close()
            self.algo.stop()
        finally:
            self._let_go_of_run()

    def _let_go_of_run(self) -> None:
        """Release this trainer's share of the run's lock; the last trainer of the run lets go of it."""
        lock = _LOCKS.get(self.run_dir)
        if self._holds_lock and lock is not None:
            lock.trainers -= 1
            if lock.trainers <= 0:
                unlock_run(self.run_dir)
        self._holds_lock = False


def _network_weights(module_state: dict) -> dict[str, torch.Tensor]:
    """The module's ``net`` as a plain state_dict (without APPO's target network)."""
    return {key.removeprefix("net."): torch.as_tensor(value) for key, value in module_state.items()
            if key.startswith("net.")}


# Env runners batch a few environments per forward pass; a second torch thread per runner only
# competes with the other runners and the learner for the same cores.
WORKER_ENV = {"env_vars": {"OMP_NUM_THREADS": "1"}}


def connect(address: str | None) -> None:
    """Join the cluster at ``address``, or start a local Ray on this machine's CPUs."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, runtime_env=WORKER_ENV)
    else:
        # Ray starts its workers at niceness 15, so on a small machine the learner in this driver
        # process starves the env runners; they produce the learner's data and deserve equal turns.
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=WORKER_ENV,
                 _system_config={"worker_niceness": 0})
