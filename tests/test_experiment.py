"""Experiments: presets are data, every field overridable, mistakes named."""

import numpy as np
import pytest

from spiral.datasets import load_dataset
from spiral.experiment import PRESET_DIR, VALIDATION_IMAGES, Experiment, _load_dataset


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
        (["env.fit_color=true", "reward.conditional=false", "reward.mode=\"final\""], "fit_color takes each stroke"),
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


# One bad value per kind of setting: each refused by the Experiment's own checks, naming the
# field, the type and the range it wants, and the value it got.
BAD_VALUES = [
    ("training.lr=abc", "training.lr must be a number > 0, got 'abc'"),
    ("training.lr=0", "training.lr must be a number > 0, got 0"),
    ("training.lr=nan", "training.lr must be a number > 0, got nan"),
    ("training.lr=inf", "training.lr must be a number > 0, got inf"),
    ("training.lr=true", "training.lr must be a number > 0, got true"),
    ("training.lr=[1e-3]", "training.lr must be a number > 0, got [0.001]"),
    ("training.gamma=1.5", "training.gamma must be a number in [0, 1], got 1.5"),
    ("training.iterations=true", "training.iterations must be an integer >= 1, got true"),
    ("training.iterations=2.5", "training.iterations must be an integer >= 1, got 2.5"),
    ("training.iterations=1e3", "training.iterations must be an integer >= 1, got 1000.0"),
    ("training.batch_episodes=0", "training.batch_episodes must be an integer >= 1, got 0"),
    ("training.num_env_runners=-1", "training.num_env_runners must be an integer >= 0, got -1"),
    ("training.time_budget_s=-5", "training.time_budget_s must be a number > 0 (or left out), got -5"),
    ("training.seed=-1", "training.seed must be an integer >= 0, got -1"),
    ("training.algorithm=ppo", "training.algorithm must be one of ('impala', 'appo'), got 'ppo'"),
    ("training.entropy_weights={flag=-1.0}", "training.entropy_weights must be a table of numbers >= 0, got "
                                             "{'flag': -1.0}"),
    ("training.entropy_weights=[1, 2]", "training.entropy_weights must be a table of numbers >= 0, got [1, 2]"),
    ("training.entropy_weights={flg=2.0}", "training.entropy_weights names ['flg'], which are not action components"),
    ("reward.conditional=1", "reward.conditional must be true or false, got 1"),
    ("reward.mode=\"sparkles\"", "reward.mode must be one of ('final', 'temporal', 'l2', 'mix'), got 'sparkles'"),
    ("reward.stroke_penalty=-0.1", "reward.stroke_penalty must be a number >= 0, got -0.1"),
    ("discriminator.loss=hinge", "discriminator.loss must be one of ('wgan-gp', 'nonsaturating'), got 'hinge'"),
    ("discriminator.width=8.0", "discriminator.width must be an integer >= 1, got 8.0"),
    ("discriminator.lr=-1e-4", "discriminator.lr must be a number > 0, got -0.0001"),
    ("data.dataset=mnst", "data.dataset must be one of ('mnist', 'fashion-mnist', 'glyphs', 'lfw', 'photos') or "
                          "'folder:...', got 'mnst'"),
    ("data.limit=0", "data.limit must be an integer >= 1 (or left out), got 0"),
    ("data.color=\"yes\"", "data.color must be true or false, got 'yes'"),
    ("checkpoint.keep=0", "checkpoint.keep must be an integer >= 1, got 0"),
    ("network.hidden=0", "network.hidden must be an integer >= 1, got 0"),
    ("network.channels=true", "network.channels must be an integer >= 1, got true"),
    ("network.flag_paint_bias=\"high\"", "network.flag_paint_bias must be a number, got 'high'"),
    # env: the types from PaintConfig's hints, the ranges from PaintConfig itself
    ("env.grid_size=true", "env.grid_size must be an integer, got true"),
    ("env.fixed_size=\"big\"", "env.fixed_size must be a number, got 'big'"),
    ("env.background=[0, 0]", "env.background must be a list of 3 integers, got [0, 0]"),
    ("env.canvas_size=\"big\"", "env.canvas_size must be an integer or a list of 2 integers, got 'big'"),
    ("env.brush_sizes=[1, \"x\"]", "env.brush_sizes must be a list of numbers, got [1, 'x']"),
    ("env.use_color=0", "env.use_color must be true or false, got 0"),
    ("env.grid_size=0", "[env] grid_size must be an int >= 1, got 0"),
    ("env.fixed_color=[0, 0, 300]", "[env] fixed_color must be three ints in 0..255"),
    ("env.brush_sizes=[]", "[env] brush_sizes must be 1 to 64 finite positive radii"),
    ("name=5", "name must be a string, got 5"),
    ("env=5", "env must be a table, got 5"),
    ("training=5", "[training] must be a table of settings, got 5"),
    ("training.lr.x=1", "training.lr is a setting, not a section of settings"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES, ids=[override for override, _ in BAD_VALUES])
def test_a_bad_value_is_refused_with_the_field_the_type_and_the_range(override, message):
    with pytest.raises(ValueError) as refused:
        Experiment.from_preset("smoke", [override])
    assert message in str(refused.value)


def test_every_setting_is_type_checked_by_its_full_name():
    """No field escapes: a value of the wrong type in any field of any section is refused, naming it."""
    from dataclasses import fields

    from spiral.experiment import SECTIONS

    for section, kind in SECTIONS.items():
        for spec in fields(kind):
            wrong = 7 if spec.type == "str" else "seven"
            with pytest.raises(ValueError, match=rf"\b{section}\.{spec.name} must be "):
                Experiment.from_dict({section: {spec.name: wrong}})


def test_the_limits_table_names_only_real_settings():
    from dataclasses import fields

    from spiral.experiment import LIMITS, SECTIONS
    from spiral.network_config import NetworkConfig

    kinds = SECTIONS | {"network": NetworkConfig}
    for name in LIMITS:
        section, setting = name.split(".")
        assert setting in {spec.name for spec in fields(kinds[section])}, name


def test_numbers_accept_integers_and_optional_settings_none():
    experiment = Experiment.from_preset("smoke", ["training.lr=1", "env.canvas_size=16", "env.fixed_size=2"])
    assert experiment.training.lr == 1 and experiment.paint_config().canvas_size == (16, 16)
    data = experiment.to_dict()
    assert data["training"]["time_budget_s"] is None and data["data"]["limit"] == 64
    assert Experiment.from_dict(data) == experiment  # experiment.json holds null for an unset setting


def test_every_problem_is_named_at_once():
    with pytest.raises(ValueError) as refused:
        Experiment.from_preset("smoke", ["training.lr=abc", "checkpoint.every=0", "env.grid_size=true"])
    message = str(refused.value)
    assert "training.lr" in message and "checkpoint.every" in message and "env.grid_size" in message


def test_a_preset_file_with_a_bad_value_is_named(tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text('[training]\nlr = "fast"\n')
    with pytest.raises(ValueError, match=rf"Preset {preset}: .*training.lr must be a number > 0, got 'fast'"):
        Experiment.from_preset(str(preset))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[training\nlr = 1", "is not valid TOML"),
        (b"[training]\nlr = ", "is not valid TOML"),
        (b"\xff\xfe[training]", "is not a text file"),
        (b"training = 5", "must be a table of settings"),
        (b"[optimizer]\nlr = 1", r"Unknown experiment section\(s\) \['optimizer'\]"),
    ],
)
def test_a_broken_preset_file_is_refused_with_its_name(tmp_path, content, message):
    preset = tmp_path / "broken.toml"
    preset.write_bytes(content)
    with pytest.raises(ValueError, match=rf"Preset {preset}.*{message}"):
        Experiment.from_preset(str(preset))


def test_an_unreadable_preset_file_is_refused_with_its_name(tmp_path, monkeypatch):
    from pathlib import Path

    preset = tmp_path / "locked.toml"
    preset.write_text("[training]\nlr = 1e-3\n")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)  # tests run as root, whom chmod does not stop
    with pytest.raises(ValueError, match=rf"Preset {preset} cannot be read: Permission denied"):
        Experiment.from_preset(str(preset))


def test_spiral_train_refuses_a_bad_setting_before_ray_starts():
    """The settings' own message, not RLlib's; no traceback; no Ray (not even imported), so it is quick."""
    import os
    import shutil
    import subprocess
    import sys
    import time

    spiral = shutil.which("spiral", path=os.path.dirname(sys.executable))
    started = time.monotonic()
    result = subprocess.run([spiral, "train", "--preset", "smoke", "training.lr=abc"], capture_output=True,
                            text=True, timeout=60)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "spiral train: error: Invalid experiment: training.lr must be a number > 0, got 'abc'" in result.stderr
    assert "Traceback" not in output and "Ray" not in output and "Invalid `lr`" not in output
    assert elapsed < 10, elapsed
    # Nor torch (spiral.network_config holds the network's settings apart from it): refused in a moment.
    code = ("import sys\nfrom spiral.cli import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
            "    print(sorted({'ray', 'torch'} & set(sys.modules)))")
    for command in (["train", "--preset", "smoke", "training.lr=abc"], ["export", "no-such-run", "--out", "agent"]):
        result = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_validation_images_are_the_training_splits_tail_kept_out_of_training():
    experiment = Experiment.from_preset("mnist-pen", ["data.limit=2500"])
    train, validation = experiment.images("train"), experiment.images("validation")
    whole = load_dataset("mnist", (64, 64), limit=2500).train
    assert len(validation) == VALIDATION_IMAGES and np.array_equal(np.concatenate([train, validation]), whole)
    small = Experiment.from_preset("mnist-pen", ["data.limit=64"])
    assert len(small.images("validation")) == 0 and len(small.images("train")) == 64  # too few to spare any
    with pytest.raises(ValueError, match="split must be one of"):
        experiment.images("val")


def test_a_count_of_test_images_is_the_first_of_the_split_loaded_alone():
    experiment = Experiment.from_preset("mnist-pen", ["data.limit=300"])
    _load_dataset.cache_clear()
    first = experiment.images("test", 20)
    _load_dataset("mnist", (64, 64), False, False, 20, experiment.training.seed)
    assert _load_dataset.cache_info().hits == 1, "the 20 were not loaded alone"
    assert np.array_equal(first, experiment.images("test")[:20])
    assert np.array_equal(experiment.images("test", 1000), experiment.images("test"))  # data.limit still holds
    assert np.array_equal(experiment.images("validation", 5), experiment.images("validation")[:5])
