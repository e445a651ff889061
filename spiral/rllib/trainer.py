"""Runs an experiment: one run folder, atomic checkpoints, TensorBoard, exports, resume.

A run folder holds ``experiment.json`` (what was asked), ``checkpoints/iter-NNNNNN`` (RLlib
checkpoints, the last ``keep`` of them, each written under a temporary name and renamed when
complete), ``agent/`` (the latest exported agent, plain state_dicts: see ``spiral.agent``),
``best/`` (the export with the lowest greedy L2 on the validation images, conditional runs only:
``Experiment.images``), all three written with
``envs.storage.write_folder`` so that none is ever seen half-written, ``tb/``
(TensorBoard scalars and image grids) and ``run.lock`` (one process at a time: ``spiral.runs``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core import DEFAULT_MODULE_ID
from tensorboardX import SummaryWriter
from tqdm import tqdm

from envs.storage import copy_folder, write_file, write_folder
from spiral.agent import load_agent, write_agent
from spiral.curves import GRID_TAG
from spiral.evaluation import blank_score
from spiral.experiment import Experiment
from spiral.manifest import AgentManifest, DiscriminatorRecord, TrainingRecord
from spiral.rllib.algorithm import build_config
from spiral.rllib.module import DISCRIMINATOR_ID
from spiral.runs import (
    checkpoint_iteration,
    hold_run,
    latest_checkpoint,
    lock_run,
    new_run_folder,
    release_run,
    run_experiment,
    unlock_run,
)


FINAL_L2_WINDOW = 100  # episodes: about three iterations of the shipped presets


class PaintingMetrics(RLlibCallback):
    """Logs the final canvas's distance to its target (conditional environments).

    As the plain mean of the last ``FINAL_L2_WINDOW`` episodes, rather than RLlib's default for a
    mean (an exponential moving average, coefficient 0.01, that weights episodes unequally). These
    are training images, sampled actions: judge agents by ``eval/validation_l2`` (greedy, images
    kept out of training) and ``spiral eval``.
    """

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        infos = episode.get_infos()
        if infos and "l2" in infos[-1]:
            metrics_logger.log_value("final_l2", float(infos[-1]["l2"]), reduce="mean", window=FINAL_L2_WINDOW)


class Trainer:
    """Owns the algorithm of one run; ``run()`` trains until the iteration or time budget."""

    def __init__(self, run: Path, experiment: Experiment, *, min_time_s_per_iteration: float = 1.0):
        # Absolute once, here: RLlib writes checkpoints through pyarrow, which refuses relative paths.
        self.run_dir, self.experiment = Path(run).resolve(), experiment
        hold_run(self.run_dir)  # refused here, before RLlib builds anything, if another process has the run
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
        self._torch_threads_before = torch.get_num_threads()
        torch.set_num_threads(cores_for_learner(self.algo))
        self.iteration = 0
        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is not None:
            self.algo.restore_from_path(checkpoint)
            self.iteration = checkpoint_iteration(checkpoint)
            # The restore's own push to the env runners is dropped while the build's is in flight:
            # wait for the checkpoint's policy to reach them, or they sample with the start weights.
            self.algo.env_runner_group.sync_weights(
                policies=[DEFAULT_MODULE_ID], from_worker_or_learner_group=self.algo.learner_group,
                timeout_seconds=60, inference_only=True)
        self.writer = SummaryWriter(str(self.run_dir / "tb"))
        self._last_log: tuple[float, int | None] = (time.monotonic(), None)  # for env steps/s
        self.best_l2 = float("inf")
        self.test_targets = self._evaluation_targets() if experiment.reward.conditional else None
        self.validation_targets = self._validation_targets() if experiment.reward.conditional else None
        if self.test_targets is not None:
            self.blank_l2 = blank_score(experiment.paint_config(), self.test_targets).mean
            if (self.run_dir / "best" / "agent.json").is_file():  # resumed: the best so far stays unless beaten
                self.best_l2 = self._validation_l2(load_agent(self.run_dir / "best"))

    def _evaluation_targets(self) -> np.ndarray:
        """32 held-out targets for the curve; a folder too small to hold any out lends its training images."""
        held_out = self.experiment.images("test")
        return (held_out if len(held_out) else self.experiment.images("train"))[:32]

    def _validation_targets(self) -> np.ndarray:
        """What ``best/`` is chosen on: the validation images, or for a dataset too small to spare them,
        32 training images (never the test split, which only measures)."""
        validation = self.experiment.images("validation")
        return validation if len(validation) else self.experiment.images("train")[:32]

    def _validation_l2(self, agent) -> float:
        """Greedy, as the agent paints for a user and is scored."""
        episodes = agent.paint_all(self.validation_targets, seeds=[0] * len(self.validation_targets), greedy=True)
        return float(np.mean([episode.l2 for episode in episodes]))

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
            episodes = agent.paint_all(seeds=range(8))
        else:
            episodes = agent.paint_all(self.test_targets)  # seeded by each image's place
            l2 = float(np.mean([episode.l2 for episode in episodes]))
            self.writer.add_scalar("eval/test_l2", l2, step)
            self.writer.add_scalar("eval/blank_l2", self.blank_l2, step)  # the floor to beat, on the same images
            validation = self._validation_l2(agent)
            self.writer.add_scalar("eval/validation_l2", validation, step)
            if validation < self.best_l2:
                self.best_l2 = validation
                # Swapped in whole: a reader of best/ (the app) sees the previous best or this one.
                copy_folder(agent_dir, self.run_dir / "best")
        rows = [np.concatenate([episode.canvas for episode in episodes[:8]], axis=1)]
        if self.test_targets is not None:
            rows.insert(0, np.concatenate(list(self.test_targets[:8]), axis=1))
        self.writer.add_image(GRID_TAG, np.concatenate(rows, axis=0), step, dataformats="HWC")
        self.writer.flush()

    def stop(self) -> None:
        try:
            self.writer.close()
            self.algo.stop()
        finally:
            torch.set_num_threads(self._torch_threads_before)
            self._let_go_of_run()

    def _let_go_of_run(self) -> None:
        """Release this trainer's share of the run's lock; the last trainer of the run lets go of it."""
        if self._holds_lock:
            release_run(self.run_dir)
        self._holds_lock = False


def _network_weights(module_state: dict) -> dict[str, torch.Tensor]:
    """The module's ``net`` as a plain state_dict (without APPO's target network)."""
    return {key.removeprefix("net."): torch.as_tensor(value) for key, value in module_state.items()
            if key.startswith("net.")}


# Env runners batch a few environments per forward pass; a second torch thread per runner only
# competes with the other runners and the learner for the same cores.
WORKER_ENV = {"env_vars": {"OMP_NUM_THREADS": "1"}}


def cores_for_learner(algo: Algorithm) -> int:
    """The cores of this machine that its env runners leave to the learner in this driver (at least one).

    torch starts one thread per core. On two cores with one env runner, the learner's second thread
    only takes the runner's core in turns, and the runner makes the learner's data: ``mnist-recon``
    trained about 1.1x faster with one learner thread (``benchmarks/training_speed.py
    --learner-threads 2``, README). On a cluster whose env runners live on other machines, the
    learner keeps every core of its own.
    """
    here = ray.get_runtime_context().get_node_id()
    runner_nodes = algo.env_runner_group.foreach_env_runner(
        lambda runner: ray.get_runtime_context().get_node_id(), local_env_runner=False)
    return max(1, (os.cpu_count() or 1) - sum(node == here for node in runner_nodes))


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
