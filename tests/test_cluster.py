"""Ray beyond one process: env runners on a second node, and a runner killed mid-training."""

import os
import signal

import pytest
import ray
from ray.cluster_utils import Cluster

from spiral.experiment import Experiment
from spiral.rllib.algorithm import build_config
from spiral.rllib.trainer import WORKER_ENV, cores_for_learner

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def runner_facts(algo) -> list[tuple[str, int]]:
    """(node id, pid) of every remote env runner."""
    return algo.env_runner_group.foreach_env_runner(
        lambda runner: (ray.get_runtime_context().get_node_id(), os.getpid()), local_env_runner=False
    )


@pytest.fixture
def two_node_cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=2, resources={"worker_node": 2})
    ray.init(address=cluster.address, runtime_env=WORKER_ENV)
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def test_env_runners_run_on_the_second_node(two_node_cluster):
    cluster, worker = two_node_cluster
    experiment = Experiment.from_preset("smoke", ["training.num_env_runners=2", "training.envs_per_env_runner=2"])
    algo = build_config(experiment, env_runner_resources={"worker_node": 1}).build_algo()
    try:
        nodes = {node for node, _ in runner_facts(algo)}
        assert nodes == {worker.node_id}
        assert cores_for_learner(algo) == os.cpu_count()  # no runner on the driver's node takes a core
        algo.train()  # the first iteration may end before any sample arrives
        result = algo.train()
        assert result["num_env_steps_sampled_lifetime"] > 0
    finally:
        algo.stop()


def test_a_killed_env_runner_is_restored_and_training_goes_on():
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=WORKER_ENV)
    # Two runners: IMPALA keeps sampling from the healthy one while the other comes back.
    experiment = Experiment.from_preset("smoke", ["training.num_env_runners=2", "training.envs_per_env_runner=2"])
    algo = build_config(experiment).build_algo()
    try:
        for _ in range(2):
            before = algo.train()["num_env_steps_sampled_lifetime"]
        pids = {pid for _, pid in runner_facts(algo)}
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        steps, restored = before, False
        for _ in range(20):
            steps = algo.train()["num_env_steps_sampled_lifetime"]
            if algo.env_runner_group.num_healthy_remote_workers() == 2:
                now = {pid for _, pid in runner_facts(algo)}
                restored = victim not in now and len(now) == 2
                if restored and steps > before + 100:
                    break
        assert restored, "the killed runner was not replaced"
        assert steps > before + 100
    finally:
        algo.stop()
        ray.shutdown()


def test_the_cloud_cluster_config_is_valid_for_ray_up():
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load(open("train/cluster.yaml"))))
