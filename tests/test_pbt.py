"""Population-based training through Ray Tune, with the real RLlib."""

import pytest
import ray

from spiral.experiment import Experiment
from spiral.rllib.pbt import run_pbt
from spiral.rllib.trainer import WORKER_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_population_based_training_perturbs_lr_and_entropy(tmp_path):
    ray.init(num_cpus=4, include_dashboard=False, runtime_env=WORKER_ENV)  # two trials side by side
    try:
        experiment = Experiment.from_preset("smoke", ["training.envs_per_env_runner=2"])
        results = run_pbt(experiment, tmp_path, population=2, iterations=4, interval=2)
    finally:
        ray.shutdown()
    assert all(result.error is None for result in results)
    settings = {(result.config["lr"], result.config["learner_config_dict"]["entropy_scale"]) for result in results}
    assert settings != {(experiment.training.lr, 1.0)}, "no trial was perturbed"
    assert all(result.metrics["training_iteration"] == 4 for result in results)
