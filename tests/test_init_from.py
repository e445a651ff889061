"""``training.init_from``: a run that starts from an exported agent's policy (a supervised-pretrained one).

Without Ray: the experiment refuses an agent whose policy would not fit, naming the difference. With
Ray: the learner's and every env runner's policy start from the agent's weights bit for bit, so the
first episodes already come from it; the export loads; ``--resume`` continues from the checkpoint.
"""

import json

import numpy as np
import pytest
import torch

from spiral.agent import load_agent, write_agent
from spiral.experiment import Experiment
from spiral.policy import bfloat16_supported
from tests.conftest import export_untrained


def smoke(*overrides: str) -> Experiment:
    return Experiment.from_preset("smoke", list(overrides))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A smoke-sized agent whose weights no random initialisation gives: a supervised-pretrained policy."""
    folder = export_untrained(tmp_path_factory.mktemp("agents") / "pretrained", "smoke")
    agent = load_agent(folder)
    generator = torch.Generator().manual_seed(7)
    weights = {key: value + 0.01 * torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
               for key, value in agent.policy.state_dict().items()}
    return write_agent(folder, weights, {}, agent.manifest)


# --- validation, without Ray --------------------------------------------------------------------------------

def test_a_matching_agent_is_accepted_and_recorded_as_an_absolute_path(pretrained, tmp_path, monkeypatch):
    monkeypatch.chdir(pretrained.parent)
    experiment = smoke(f'training.init_from="{pretrained.name}"')
    assert experiment.training.init_from == str(pretrained.resolve())
    assert json.loads(experiment.to_json())["training"]["init_from"] == str(pretrained.resolve())
    monkeypatch.chdir(tmp_path)  # the recorded experiment (experiment.json, Ray's workers) is valid from anywhere
    assert Experiment.from_dict(json.loads(experiment.to_json())).training.init_from == str(pretrained.resolve())
    assert smoke().training.init_from is None


@pytest.mark.parametrize("overrides, theirs, ours", [
    (["env.grid_size=8"], "grid 4", "grid 8"),  # and end/control points of 64 cells instead of 16
    (["reward.conditional=false"], "reward.conditional=true", "reward.conditional=false"),
    (["network.hidden=64"], "network.hidden=32", "network.hidden=64"),
    (["env.use_size=true"], "actions ['flag', 'end', 'control'] of sizes [2, 16, 16]",
     "actions ['flag', 'end', 'control', 'size'] of sizes [2, 16, 16, 6]"),
])
def test_a_mismatching_agent_is_refused_naming_the_difference(pretrained, overrides, theirs, ours):
    with pytest.raises(ValueError) as refused:
        smoke(f'training.init_from="{pretrained}"', *overrides)
    message = str(refused.value)
    assert f"training.init_from {pretrained} was trained with " in message, message
    trained, _, uses = message.partition("; this experiment uses ")
    assert theirs in trained and ours in uses, message


def test_several_differences_are_named_together(pretrained):
    with pytest.raises(ValueError, match=r"trained with reward\.conditional=true, network\.channels=8; "
                                         r"this experiment uses reward\.conditional=false, network\.channels=4\.$"):
        smoke(f'training.init_from="{pretrained}"', "reward.conditional=false", "network.channels=4")


def test_what_is_not_an_agent_folder_is_refused(pretrained, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "no-policy").mkdir()
    (tmp_path / "no-policy" / "agent.json").write_text((pretrained / "agent.json").read_text())
    (tmp_path / "bad-json").mkdir()
    (tmp_path / "bad-json" / "agent.json").write_text("{not json")
    (tmp_path / "bad-json" / "policy.pt").write_bytes(b"")
    cases = {tmp_path / "missing": "no such folder", tmp_path / "file": "no such folder", "": "no such folder",
             tmp_path: "it has no agent.json", tmp_path / "no-policy": "it has no policy.pt",
             tmp_path / "bad-json": "agent.json is not valid JSON", "x" * 5000: "File name too long",
             "a\x00b": "null byte"}
    for folder, reason in cases.items():
        with pytest.raises(ValueError) as refused:
            Experiment.from_dict(smoke().to_dict() | {"training": {"init_from": str(folder)}})
        message, wanted = str(refused.value), "training.init_from must be an exported agent folder (agent.json and"
        assert f"{wanted} policy.pt), got {str(folder)!r}: " in message and reason in message, message
    with pytest.raises(ValueError, match="training.init_from must be a string"):
        smoke("training.init_from=3")


# --- with Ray -----------------------------------------------------------------------------------------------

def observations(experiment: Experiment, batch: int = 3, steps: int = 2) -> dict:
    """A fixed random batch of observations, LSTM states and actions, as the policy module takes them."""
    from ray.rllib.core.columns import Columns

    from spiral.rllib.algorithm import make_env

    env = make_env({"experiment": experiment.to_dict()})
    env.observation_space.seed(3)
    env.action_space.seed(4)
    frames = [[env.observation_space.sample() for _ in range(steps)] for _ in range(batch)]
    obs = {key: torch.as_tensor(np.array([[frame[key] for frame in row] for row in frames])) for key in frames[0][0]}
    actions = torch.as_tensor(np.array([[env.action_space.sample() for _ in range(steps)] for _ in range(batch)]))
    env.close()
    hidden = experiment.network_config().hidden
    state = {key: torch.randn(batch, hidden, generator=torch.Generator().manual_seed(5)) for key in ("h", "c")}
    return {Columns.OBS: obs, Columns.STATE_IN: state, Columns.ACTIONS: actions}


def module_and_plain_outputs(module, folder: str, batch: dict) -> dict[str, np.ndarray]:
    """The module's logits and values and those of the agent's plain ``PolicyNetwork``, in one process."""
    from ray.rllib.core.columns import Columns

    from spiral.agent import load_agent

    policy, obs, state = load_agent(folder).policy, batch[Columns.OBS], batch[Columns.STATE_IN]
    with torch.no_grad():
        inference = module.forward_inference(dict(batch))
        features, (h, c) = policy.features(obs, (state["h"], state["c"]))
        actions, logp, _ = policy.sample(features, greedy=True)
        outputs = {
            "module_logp": inference[Columns.ACTION_LOGP].numpy(), "plain_logp": logp.numpy(),
            "module_actions": inference[Columns.ACTIONS].numpy(), "plain_actions": actions.numpy(),
            "module_h": inference[Columns.STATE_OUT]["h"].numpy(), "plain_h": h.numpy(),
            "module_values": module.compute_values(dict(batch)).numpy(), "plain_values": policy.value(features).numpy(),
        }
        if not module.inference_only:  # an env runner's module only acts
            outputs["module_forced"] = module.forward_train(dict(batch))[Columns.ACTION_DIST_INPUTS].numpy()
            outputs["plain_forced"] = policy.teacher_forced_logits(features, batch[Columns.ACTIONS]).numpy()
        return outputs


def assert_identical(outputs: dict[str, np.ndarray]) -> None:
    for key in [key.removeprefix("module_") for key in outputs if key.startswith("module_")]:
        assert np.array_equal(outputs[f"module_{key}"], outputs[f"plain_{key}"]), f"{key} differ"


def assert_weights_equal(weights: dict, expected: dict[str, torch.Tensor]) -> None:
    plain = {key.removeprefix("net."): value for key, value in weights.items() if key.startswith("net.")}
    assert sorted(plain) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(torch.as_tensor(plain[key]).cpu(), value), key


def test_the_module_loads_the_weights_in_setup_without_ray(pretrained):
    """What every learner and env runner does when it builds the policy module."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from spiral.rllib.algorithm import module_specs

    experiment = smoke(f'training.init_from="{pretrained}"')
    module = module_specs(experiment).rl_module_specs[DEFAULT_MODULE_ID].build()
    assert_weights_equal({f"net.{key}": value for key, value in module.net.state_dict().items()},
                         load_agent(pretrained).policy.state_dict())
    assert_identical(module_and_plain_outputs(module, str(pretrained), observations(experiment)))
    plain = module_specs(smoke()).rl_module_specs[DEFAULT_MODULE_ID]
    assert "init_from" not in plain.model_config


def test_the_anchor_is_a_frozen_copy_of_the_starting_policy(pretrained):
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.columns import Columns

    from spiral.rllib.algorithm import module_specs

    with pytest.raises(ValueError, match="training.anchor_kl holds the policy near the one it starts from"):
        smoke("training.anchor_kl=0.1")
    with pytest.raises(ValueError, match="training.anchor_kl must be a number >= 0"):
        smoke(f'training.init_from="{pretrained}"', "training.anchor_kl=-1")
    experiment = smoke(f'training.init_from="{pretrained}"', "training.anchor_kl=0.1")
    module = module_specs(experiment).rl_module_specs[DEFAULT_MODULE_ID].build()
    assert_weights_equal({key.removeprefix("anchor_"): value for key, value in module.state_dict().items()
                          if key.startswith("anchor_net.")}, load_agent(pretrained).policy.state_dict())
    assert not any(parameter.requires_grad for parameter in module.anchor_net.parameters())
    batch = observations(experiment)
    logits = module.forward_train(dict(batch))[Columns.ACTION_DIST_INPUTS]
    assert torch.allclose(module.net.divergences(logits, module.anchor_logits(batch)), torch.zeros(()), atol=1e-6)
    with torch.no_grad():
        module.net.stem.bias.add_(0.5)  # the policy moves; the anchor stays
    moved = module.forward_train(dict(batch))[Columns.ACTION_DIST_INPUTS]
    divergences = module.net.divergences(moved, module.anchor_logits(batch))
    assert (divergences > 0).any() and (divergences >= -1e-6).all()
    for ours, theirs, value in zip(module.net.split(moved), module.net.split(module.anchor_logits(batch)),
                                   divergences.unbind(-1)):
        expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=ours),
                                                     torch.distributions.Categorical(logits=theirs))
        assert torch.allclose(value, expected, atol=1e-5)
    assert not hasattr(module_specs(smoke(f'training.init_from="{pretrained}"')).rl_module_specs[DEFAULT_MODULE_ID]
                       .build(), "anchor_net")


def test_weights_that_do_not_fit_are_refused_when_the_algorithm_builds(pretrained, tmp_path):
    from spiral.rllib.algorithm import module_specs

    agent = load_agent(pretrained)
    folder = write_agent(tmp_path / "damaged", {"stem.weight": torch.zeros(1)}, {}, agent.manifest)
    experiment = smoke(f'training.init_from="{folder}"')  # agent.json alone is read at validation: it fits
    with pytest.raises(ValueError, match="policy.pt does not fit"):
        module_specs(experiment)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from spiral.rllib.trainer import WORKER_ENV

    ray.init(num_cpus=2, include_dashboard=False, runtime_env=WORKER_ENV)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_training_starts_from_the_agent_on_the_learner_and_the_env_runners(local_ray, pretrained, tmp_path):
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    from spiral.rllib.trainer import Trainer

    experiment = smoke(f'training.init_from="{pretrained}"', "training.anchor_kl=0.1")
    expected, batch, folder = load_agent(pretrained).policy.state_dict(), observations(experiment), str(pretrained)

    def runner_check(runner):  # pickled by value to the env runners: it compares in their own process
        module = runner.module  # a single-agent runner's is the policy itself
        module = module[DEFAULT_MODULE_ID] if isinstance(module, MultiRLModule) else module
        return ({key: value.detach().cpu().clone() for key, value in module.state_dict().items()},
                module_and_plain_outputs(module, folder, batch))

    trainer = Trainer.start(experiment, tmp_path, "run")  # a second an iteration: the learner updates
    try:
        assert json.loads((trainer.run_dir / "experiment.json").read_text())["training"]["init_from"] == folder
        assert_weights_equal(trainer.algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID], expected)
        learner_outputs = trainer.algo.learner_group.foreach_learner(
            lambda learner: module_and_plain_outputs(learner.module[DEFAULT_MODULE_ID], folder, batch))
        (learner_output,) = [result.get() for result in learner_outputs]  # the result, or the error it raised
        assert_identical(learner_output)
        runners = trainer.algo.env_runner_group.foreach_env_runner(runner_check, local_env_runner=False)
        assert len(runners) == experiment.training.num_env_runners
        for weights, outputs in runners:
            assert_weights_equal(weights, expected)
            assert_identical(outputs)

        history = []  # checkpoints and exports at the last iteration
        result = trainer.run(3, progress=False, on_iteration=lambda iteration, result: history.append(result))
        updates = [result["learners"][DEFAULT_MODULE_ID] for result in history
                   if DEFAULT_MODULE_ID in result.get("learners", {})]
        kl = [float(update["anchor_kl"]) for update in updates]  # the penalty is in the loss
        assert kl and all(value > -1e-5 and np.isfinite(value) for value in kl), kl
        learned = trainer.algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
        assert_weights_equal({key.removeprefix("anchor_"): value for key, value in learned.items()
                              if key.startswith("anchor_net.")}, expected)  # the anchor does not learn
        assert not torch.equal(torch.as_tensor(learned["net.stem.weight"]), expected["stem.weight"])  # the policy does
        exported = load_agent(trainer.run_dir / "agent")
        assert exported.manifest.training.iterations == 3
        # A checkpoint that is not the agent's weights, so that a resumed run shows which one won.
        moved = {key: value + 1.0 if value.is_floating_point() else value for key, value in expected.items()}
        trainer.algo.learner_group.set_weights({DEFAULT_MODULE_ID: {f"net.{key}": value.numpy()
                                                                    for key, value in moved.items()}})
        trainer.checkpoint(result)
    finally:
        trainer.stop()

    # The checkpoint wins over the agent: RLlib restores after the modules' setup, and the trainer
    # waits for the restored policy to reach the env runners before any sampling.
    resumed = Trainer.resume(trainer.run_dir, min_time_s_per_iteration=0)
    try:
        assert_weights_equal(resumed.algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID], moved)
        for weights, _ in resumed.algo.env_runner_group.foreach_env_runner(runner_check, local_env_runner=False):
            assert_weights_equal(weights, moved)
    finally:
        resumed.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_during_the_critic_warm_up_only_the_discriminator_and_the_value_head_learn(local_ray, pretrained, tmp_path):
    """training.critic_warmup_steps: the pretrained policy's torso and action heads hold still, bit for bit,
    while the discriminator and the value head learn from its canvases."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from spiral.rllib.module import DISCRIMINATOR_ID
    from spiral.rllib.trainer import Trainer

    with pytest.raises(ValueError, match="training.critic_warmup_steps must be an integer >= 0"):
        smoke("training.critic_warmup_steps=-1")
    experiment = smoke(f'training.init_from="{pretrained}"', "training.anchor_kl=0.1",
                       "training.critic_warmup_steps=1000000")
    expected = load_agent(pretrained).policy.state_dict()
    trainer = Trainer.start(experiment, tmp_path, "run")
    try:
        critic = {key: torch.as_tensor(value).clone() for key, value in
                  trainer.algo.learner_group.get_weights([DISCRIMINATOR_ID])[DISCRIMINATOR_ID].items()}
        history = []
        trainer.run(2, progress=False, on_iteration=lambda iteration, result: history.append(result))
        updates = [result["learners"][DEFAULT_MODULE_ID] for result in history
                   if DEFAULT_MODULE_ID in result.get("learners", {})]
        assert updates and all(float(update["critic_warmup"]) == 1.0 for update in updates), updates
        weights = trainer.algo.learner_group.get_weights([DEFAULT_MODULE_ID, DISCRIMINATOR_ID])
        learned = {key: torch.as_tensor(value) for key, value in weights[DEFAULT_MODULE_ID].items()}
        held = {key: value for key, value in expected.items() if not key.startswith("value_head.")}
        assert_weights_equal({key: value for key, value in learned.items()
                              if not key.startswith("net.value_head.")}, held)
        assert not torch.equal(learned["net.value_head.weight"], expected["value_head.weight"])
        assert any(not torch.equal(torch.as_tensor(value), critic[key])
                   for key, value in weights[DISCRIMINATOR_ID].items())
    finally:
        trainer.stop()


@pytest.mark.skipif(not bfloat16_supported(torch.device("cpu")), reason="this CPU has no bf16 arithmetic")
def test_under_bfloat16_the_anchor_is_rounded_as_the_policy_is(pretrained):
    """training.precision = "bfloat16": the anchor's logits go through the same rounding as the policy's,
    so the KL penalty starts at exactly 0 rather than at the noise of bf16."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.columns import Columns

    from spiral.rllib.algorithm import module_specs

    experiment = smoke(f'training.init_from="{pretrained}"', "training.anchor_kl=0.1", 'training.precision="bfloat16"')
    module = module_specs(experiment).rl_module_specs[DEFAULT_MODULE_ID].build()
    batch = observations(experiment)
    logits = module.forward_train(dict(batch))[Columns.ACTION_DIST_INPUTS]
    assert logits.dtype == torch.float32
    assert (module.net.divergences(logits, module.anchor_logits(batch)) == 0).all()
    module.model_config["precision"] = "float32"
    assert not torch.equal(module.forward_train(dict(batch))[Columns.ACTION_DIST_INPUTS], logits)  # it was bf16
