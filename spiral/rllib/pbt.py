"""Population-based training of the learning rate and the entropy cost (SPIRAL, SPIRAL++).

A population of the same experiment trains with Ray Tune; every ``interval`` iterations the
worse half copies the weights of the better half and perturbs its learning rate and entropy
coefficient. Conditional runs are ranked by the final canvas's L2 to its target, unconditional
ones by the reward the discriminator gives.
"""

from __future__ import annotations

from pathlib import Path

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining

from spiral.experiment import Experiment
from spiral.rllib.algorithm import build_config
from spiral.rllib.trainer import PaintingMetrics


def ranking(experiment: Experiment) -> tuple[str, str]:
    if experiment.reward.conditional:
        return "env_runners/final_l2", "min"
    return "learners/default_policy/reward_mean", "max"


def run_pbt(experiment: Experiment, runs_dir: Path, population: int, iterations: int, interval: int = 10
            ) -> tune.ResultGrid:
    """Train ``population`` copies with PBT; results and checkpoints go to ``runs_dir/<name>-pbt``."""
    training = experiment.training
    config = build_config(experiment).callbacks(PaintingMetrics)
    metric, mode = ranking(experiment)
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=interval,
        quantile_fraction=0.5 if population < 4 else 0.25,  # small populations: bottom half copies top half
        synch=True,  # every trial reaches the perturbation point, with its checkpoint, before any exploits
        hyperparam_mutations={
            "lr": tune.loguniform(training.lr / 10, training.lr * 10),
            "learner_config_dict": {"entropy_scale": tune.loguniform(0.1, 10.0)},
        },
    )
    config.learners(learner_config_dict=config.learner_config_dict | {"entropy_scale": 1.0})
    tuner = tune.Tuner(
        config.algo_class,
        param_space=config,
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=population, metric=metric, mode=mode),
        run_config=tune.RunConfig(
            name=f"{experiment.name}-pbt",
            storage_path=str(Path(runs_dir).resolve()),
            stop={"training_iteration": iterations},
            # PBT restores trials from each other's checkpoints: deleting old ones breaks exploitation.
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=interval, num_to_keep=None),
            verbose=1,
        ),
    )
    return tuner.fit()
