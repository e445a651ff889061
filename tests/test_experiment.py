"""Experiments: presets are data, every field overridable, mistakes named."""

import pytest

from spiral.experiment import PRESET_DIR, Experiment


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
def test_every_preset_is_a_valid_experiment(preset):
    experiment = Experiment.from_preset(preset)
    assert experiment.name == preset
    assert Experiment.from_dict(experiment.to_dict()) == experiment


def test_overrides_reach_any_field():
    experiment = Experiment.from_preset(
        "smoke", ["training.lr=3e-4", "data.dataset=fashion-mnist", "env.grid_size=8", "reward.mode=\"final\"",
                  "training.entropy_weights={flag = 3.0}"])
    assert experiment.training.lr == 3e-4 and experiment.data.dataset == "fashion-mnist"
    assert experiment.paint_config().grid_size == 8 and experiment.reward.mode == "final"
    assert experiment.training.entropy_weights == {"flag": 3.0}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.lrr=1"], r"Unknown setting\(s\) \['training.lrr'\]"),
        (["optimizer.lr=1"], r"Unknown experiment section\(s\) \['optimizer'\]"),
        (["reward.mode=\"sparkles\""], "reward.mode must be one of"),
        (["reward.mode=\"l2\"", "reward.conditional=false"], "compares with targets"),
        (["env.grid_size=0"], "grid_size"),
        (["network.widht=3"], "Unknown network setting"),
        (["lr"], "must look like section.field=value"),
    ],
)
def test_mistakes_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        Experiment.from_preset("smoke", overrides)


@pytest.mark.parametrize("in_env", ["l2-final", "l2-step"])
@pytest.mark.parametrize("mode", ["temporal", "l2"])
def test_an_in_env_reward_that_the_learner_would_overwrite_is_refused_naming_both_settings(in_env, mode):
    with pytest.raises(ValueError) as refused:
        Experiment.from_preset("smoke", [f'env.reward="{in_env}"', f'reward.mode="{mode}"'])
    message = str(refused.value)
    assert f"env.reward={in_env!r}" in message and f"reward.mode={mode!r}" in message
    assert 'set reward.mode="l2"' in message
    assert Experiment.from_preset("smoke", ['env.reward="none"']).paint_config().reward == "none"


def test_an_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="Presets: .*mnist-recon"):
        Experiment.from_preset("mnist-recn")
