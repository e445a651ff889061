"""Search demonstrations and behaviour cloning (spiral.search, spiral.demonstrations, spiral.pretrain), with
the real libmypaint at tiny sizes: a 16 px canvas, a 4 x 4 grid, a few MNIST digits, the TINY network."""

import hashlib
import itertools
import json
import re
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from envs import ActionCodec, PaintConfig, PaintEnv, mse
from envs.actions import PAINT
from spiral.agent import load_agent, untrained_agent, write_agent
from spiral.cli import main
from spiral.demonstrations import AgentTeacher, generate_demonstrations, read_demonstrations
from spiral.experiment import Experiment
from spiral.network_config import PRECISIONS
import spiral.agent
import spiral.policy
from spiral.pretrain import Pretrainer, PretrainSettings, Symmetries, nll, replay
from spiral.programs import generate_programs, image_seed, read_programs
from spiral.search import SearchSettings, greedy_search, label_episode
from tests.conftest import TINY

TINY_PEN = """
[env]
canvas_size = 16
grid_size = 4
episode_length = 4
brush = "classic/pen"
brush_sizes = [0.5, 1.0]
use_pressure = false
use_color = false
use_flag = true
background = [0, 0, 0]
fixed_color = [255, 255, 255]

[network]
input_size = 16
channels = 8
res_blocks = 1
hidden = 32
embedding = 8

[data]
dataset = "mnist"

[reward]
mode = "l2"
conditional = true
"""
PEN = PaintConfig(canvas_size=16, grid_size=4, episode_length=4, brush="classic/pen", brush_sizes=(0.5, 1.0),
                  use_pressure=False, use_color=False, background=(0, 0, 0), fixed_color=(255, 255, 255))
SEARCH = SearchSettings(bank=8, jumps=2, seed=0)


@pytest.fixture
def preset(tmp_path) -> Experiment:
    path = tmp_path / "tiny-pen.toml"
    path.write_text(TINY_PEN)
    return Experiment.from_preset(str(path))


def replayed_l2(config: PaintConfig, target: np.ndarray, actions) -> float:
    env = PaintEnv(config, target_source=target[None])
    try:
        env.reset(options={"target": target})
        for action in actions:
            env.step(action)
        return env.l2()
    finally:
        env.close()


def cross() -> np.ndarray:
    """A white plus sign on black, 16 px."""
    image = np.zeros((16, 16, 3), np.uint8)
    image[7:9, 2:14] = image[2:14, 7:9] = 255
    return image


def test_a_tolerant_label_keeps_the_painters_stroke_only_where_it_gains_nearly_as_much():
    target, codec, rng = cross(), ActionCodec(PEN), np.random.default_rng(3)
    keywords = {"bank": SEARCH.bank, "jumps": SEARCH.jumps, "guided": 1.0, "refine": 1}
    kept_anywhere = 0
    for episode in range(6):
        actions = rng.integers(0, codec.nvec, size=(PEN.episode_length, len(codec.nvec)))
        strict, error = label_episode(PEN, target, actions, np.random.default_rng(episode), **keywords)
        tolerant, same_error = label_episode(PEN, target, actions, np.random.default_rng(episode), tolerance=0.5,
                                             **keywords)
        assert same_error == error
        own = (tolerant == actions).all(1)
        assert np.array_equal(tolerant[~own], strict[~own])  # elsewhere the search's label, as without tolerance
        for step in np.flatnonzero(own & ~(strict == actions).all(1)):
            before = replayed_l2(PEN, target, actions[:step])
            gain = before - replayed_l2(PEN, target, [*actions[:step], strict[step]])
            own_gain = before - replayed_l2(PEN, target, actions[:step + 1])
            assert actions[step][codec.index["flag"]] == strict[step][codec.index["flag"]] == PAINT
            assert gain > 0 and own_gain >= 0.5 * gain, (step, gain, own_gain)
            kept_anywhere += 1
    assert kept_anywhere > 0
    with pytest.raises(ValueError, match="tolerance"):
        label_episode(PEN, target, actions, np.random.default_rng(0), tolerance=1.0, **keywords)


@pytest.mark.parametrize("brush", ["classic/pen", "classic/dry_brush"])
@pytest.mark.parametrize("guided, refine", [(0.0, 0), (1.0, 2)])
def test_the_search_beats_the_blank_canvas_and_replays_exactly(brush, guided, refine):
    config = PaintConfig.from_dict(PEN.to_dict() | {"brush": brush})
    target = cross()
    result = greedy_search(config, target, 20, np.random.default_rng(0), jumps=5, guided=guided, refine=refine)
    assert result.mse < float(mse(np.zeros_like(target), target))
    assert len(result.actions) == config.episode_length
    # The chosen actions, replayed by PaintEnv (with a brush that drew nothing else), give the same canvas:
    # exact even for the dry brush, whose jitter depends on what the brush drew before.
    assert replayed_l2(config, target, result.actions) == result.mse
    again = greedy_search(config, target, 20, np.random.default_rng(0), jumps=5, guided=guided, refine=refine)
    assert again.actions == result.actions and again.mse == result.mse


def test_aiming_at_missing_ink_and_hill_climbing_each_beat_uniform_candidates():
    """On MNIST digits in the mnist-pen action space (64 px, grid 32), at equal candidates a step."""
    experiment = Experiment.from_preset("mnist-pen", ["env.episode_length=6"])
    config = experiment.paint_config()
    data = {"dataset": "mnist", "color": False, "invert": False, "seed": 0}
    from spiral.demonstrations import training_images

    digits = training_images(data, config, 3)

    def mean_mse(guided: float, refine: int) -> float:
        return float(np.mean([greedy_search(config, digit, 12, np.random.default_rng(index), jumps=3,
                                            guided=guided, refine=refine).mse
                              for index, digit in enumerate(digits)]))

    uniform, aimed, climbed = mean_mse(0.0, 0), mean_mse(1.0, 0), mean_mse(1.0, 2)
    assert aimed < uniform and climbed < aimed, (uniform, aimed, climbed)


def test_a_colour_search_gives_each_stroke_the_colour_of_least_error():
    """A candidate takes the colour level that minimises the MSE its footprint leaves (every one of the
    5^3 levels drawn for real is no better); a two-colour target ends far below the blank canvas and
    the search replays exactly."""
    config = PaintConfig(canvas_size=16, grid_size=4, episode_length=3, brush="classic/pen",
                         brush_sizes=(2.0, 6.0), use_pressure=False, color_levels=5)
    codec = ActionCodec(config)
    target = np.empty((16, 16, 3), np.uint8)
    target[:8], target[8:] = (200, 40, 90), (0, 64, 255)
    result = greedy_search(config, target, 8, np.random.default_rng(0), jumps=2, guided=1.0, refine=1)
    assert result.mse < 0.2 * float(mse(np.full_like(target, 255), target))
    assert replayed_l2(config, target, result.actions) == result.mse

    first = np.array(result.actions[0])
    assert first[codec.index["flag"]] == PAINT

    def painted_mse(colour: tuple[int, int, int]) -> float:
        action = first.copy()
        action[[codec.index[c] for c in ("red", "green", "blue")]] = colour
        return replayed_l2(config, target, [action])

    chosen = tuple(first[[codec.index[c] for c in ("red", "green", "blue")]])
    every = {colour: painted_mse(colour) for colour in np.ndindex(5, 5, 5)}
    assert painted_mse(chosen) == min(every.values())


def test_search_settings_are_checked():
    with pytest.raises(ValueError, match="guided must be a fraction"):
        SearchSettings(guided=1.5)
    with pytest.raises(ValueError, match="refine must be an integer >= 0"):
        SearchSettings(refine=-1)
    with pytest.raises(ValueError, match="guided must be a fraction"):
        greedy_search(PEN, cross(), 4, np.random.default_rng(0), guided=2.0)


def test_with_nothing_to_gain_the_search_lifts_the_pen_and_stays():
    result = greedy_search(PEN, np.zeros((16, 16, 3), np.uint8), 6, np.random.default_rng(1), jumps=3)
    assert result.mse == 0.0
    assert all(action[0] == 0 for action in result.actions)  # pen-up moves only
    assert result.actions[1][1] == result.actions[0][1]  # ... to the cell the pen is in


def test_without_a_flag_every_step_paints_but_the_baseline_may_skip():
    config = PaintConfig.from_dict(PEN.to_dict() | {"use_flag": False})
    blank = np.zeros((16, 16, 3), np.uint8)
    forced = greedy_search(config, blank, 4, np.random.default_rng(0))
    assert all(action is not None for action in forced.actions) and forced.mse > 0
    skipped = greedy_search(config, blank, 4, np.random.default_rng(0), replayable=False)
    assert skipped.actions == [None] * 4 and skipped.mse == 0.0


def test_a_demonstrations_file_round_trips_resumes_and_replays_exactly(preset, tmp_path):
    out = tmp_path / "demos.jsonl"
    summary = generate_demonstrations(preset, 3, SEARCH, out, progress=False)
    assert (summary.total, summary.new) == (3, 3) and summary.mean_mse < summary.blank_mse
    header = json.loads(out.read_text().splitlines()[0])
    assert header["format"] == "spiral-demonstrations" and header["version"] == 1
    assert header["data"] == {"dataset": "mnist", "color": False, "invert": False, "split": "train", "seed": 0}
    assert header["search"]["bank"] == 8 and header["preset"] == "tiny-pen"
    first = read_demonstrations(out)
    assert first.indices == [0, 1, 2] and first.config == preset.paint_config()

    # A rerun asking for more paints only the new indices, in two worker processes, as one would have.
    summary = generate_demonstrations(preset, 5, SEARCH, out, workers=2, progress=False)
    assert (summary.total, summary.new) == (5, 2)
    demos = read_demonstrations(out)
    assert demos.indices == [0, 1, 2, 3, 4]
    assert [demo.actions.tolist() for demo in demos.demos[:3]] == [demo.actions.tolist() for demo in first.demos]
    serial = generate_demonstrations(preset, 5, SEARCH, tmp_path / "serial.jsonl", progress=False)
    assert serial.mean_mse == summary.mean_mse

    targets = demos.targets()
    for demo, target in zip(demos.demos, targets):
        assert replayed_l2(demos.config, target, demo.actions) == demo.mse


def test_demonstrations_of_other_settings_are_refused(preset, tmp_path):
    out = tmp_path / "demos.jsonl"
    generate_demonstrations(preset, 1, SEARCH, out, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(search: .*\"bank\": 8.*\"bank\": 9"):
        generate_demonstrations(preset, 2, SearchSettings(bank=9, jumps=2), out, progress=False)
    other = Experiment.from_dict(preset.to_dict() | {"env": preset.env | {"grid_size": 8}})
    with pytest.raises(ValueError, match="other settings \\(env"):
        generate_demonstrations(other, 2, SEARCH, out, progress=False)
    out.write_text(json.dumps({"format": "spiral-agent", "version": 1}) + "\n")
    with pytest.raises(ValueError, match="Not a spiral demonstrations file"):
        generate_demonstrations(preset, 2, SEARCH, out, progress=False)


def test_a_truncated_last_line_is_ignored_and_a_rerun_repairs_it(preset, tmp_path):
    out = tmp_path / "demos.jsonl"
    generate_demonstrations(preset, 2, SEARCH, out, progress=False)
    whole = out.read_text()
    out.write_text(whole + whole.splitlines()[-1][:25])  # a write cut short
    assert read_demonstrations(out).indices == [0, 1]
    summary = generate_demonstrations(preset, 3, SEARCH, out, progress=False)
    assert summary.new == 1 and out.read_text().startswith(whole) and out.read_text().endswith("\n")
    assert read_demonstrations(out).indices == [0, 1, 2]


@pytest.mark.parametrize(("line", "message"), [
    ('{"index": 0, "actions": [[1, 0, 0, 0]], "mse": 0.1}', "list of 4 actions"),
    ('{"index": 0, "actions": [[1, 0, 16, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]], "mse": 0.1}',
     "'control' = 16"),
    ('{"index": 0, "actions": [[1, 0, 0, 0.5], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]], "mse": 0.1}',
     "list of integers"),
    ('{"index": -1, "actions": [], "mse": 0.1}', "index must be"),
    ('not json', "line 2 is not valid JSON"),
])
def test_reading_checks_every_line(preset, tmp_path, line, message):
    out = tmp_path / "demos.jsonl"
    generate_demonstrations(preset, 1, SEARCH, out, progress=False)
    header = out.read_text().splitlines()[0]
    out.write_text(f"{header}\n{line}\n")
    with pytest.raises(ValueError, match=message):
        read_demonstrations(out)


def test_the_learning_rate_falls_by_a_half_cosine_over_the_anneal_then_stays():
    settings = PretrainSettings(lr=1e-3, anneal=(100, 200), lr_end=1e-5, augment=("channels", "mirror"))
    rates = [settings.learning_rate(step) for step in (0, 100, 150, 200, 10_000)]
    assert rates == pytest.approx([1e-3, 1e-3, (1e-3 + 1e-5) / 2, 1e-5, 1e-5])
    assert PretrainSettings(**json.loads(json.dumps(asdict(settings)))) == settings  # as pretrain.json holds it
    assert PretrainSettings(lr=2e-4).learning_rate(10_000) == 2e-4


@pytest.mark.parametrize("changes, message", [
    ({"anneal": (0, 10)}, "anneal and lr_end go together"),
    ({"lr_end": 1e-5}, "anneal and lr_end go together"),
    ({"anneal": (10, 10), "lr_end": 1e-5}, "anneal must be two steps"),
    ({"anneal": (True, 3), "lr_end": 1e-5}, "anneal must be two steps"),
    ({"anneal": (0, 10), "lr_end": 0.0}, "lr_end must be a finite number > 0, got 0.0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"augment": ("hue",)}, "augment must name each of channels, mirror at most once, got ('hue',)"),
    ({"augment": ("mirror", "mirror")}, "augment must name each of channels, mirror at most once"),
])
def test_bad_settings_are_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=f"Invalid pretraining settings: .*{re.escape(message)}"):
        PretrainSettings(**changes)


@pytest.fixture
def demos_file(preset, tmp_path) -> Path:
    out = tmp_path / "demos.jsonl"
    generate_demonstrations(preset, 24, SEARCH, out, progress=False)
    return out


def test_pretraining_lowers_the_held_out_nll_and_exports_an_agent_that_paints(demos_file, tmp_path):
    settings = PretrainSettings(batch=8, lr=1e-3, held_out=0.25, eval_every=100, eval_paintings=2)
    trainer = Pretrainer.start(demos_file, tmp_path / "run", settings, progress=False)
    assert trainer.policy.config == TINY
    assert len(trainer.held_rows) == 6 and len(trainer.train_rows) == 18
    assert np.array_equal(trainer.episodes.final_mse, [demo.mse for demo in trainer.demos.demos])
    before = trainer.held_out_nll()
    measured = trainer.run(steps=15)
    trainer.close()
    assert measured["held_out_nll"] < before - 0.3, (before, measured)  # 7.14 -> 6.29 here
    assert trainer.step == 15 and np.isfinite(measured["greedy_mse"])
    assert {path.name for path in (tmp_path / "run").iterdir()} >= {"pretrain.json", "experiment.json", "checkpoint",
                                                                     "agent", "tb"}
    assert Experiment.from_dict(json.loads((tmp_path / "run" / "experiment.json").read_text())) == trainer.experiment

    agent = load_agent(tmp_path / "run" / "agent")
    assert agent.manifest.name == "tiny-pen" and agent.manifest.env == trainer.config
    assert agent.manifest.training.iterations == 15 and agent.conditional
    episode = agent.paint(trainer.demos.targets()[0], seed=0, greedy=True)
    assert len(episode.actions) == 4 and np.isfinite(episode.l2)
    for key, value in agent.policy.state_dict().items():
        assert torch.equal(value, trainer.policy.state_dict()[key])


@pytest.mark.parametrize("config", [PEN, replace(PEN, brush="classic/dry_brush", background=(40, 40, 40)),
                                    replace(PEN, background=(0, 0, 80)), replace(PEN, use_color=True)])
def test_replayed_canvases_are_what_the_env_showed_kept_as_one_channel_where_grey(config):
    rng = np.random.default_rng(0)
    codec = ActionCodec(config)
    actions = [np.stack([rng.integers(codec.nvec) for _ in range(config.episode_length)]) for _ in range(3)]
    targets = np.stack([cross()] * 3)
    episodes = replay(config, targets, actions)
    grey = not config.use_color and config.background in ((0, 0, 0), (40, 40, 40))
    assert episodes.canvases.shape == (3, config.episode_length, 16, 16, 1 if grey else 3)
    assert len(np.unique(episodes.canvases[:, -1])) > 1  # strokes were painted
    observation, _ = episodes.batch(np.arange(3), conditional=True)
    env = PaintEnv(config, target_source=targets[:1])
    try:
        for row, (target, episode) in enumerate(zip(targets, actions)):
            shown, _ = env.reset(seed=0, options={"target": target})
            for step, action in enumerate(episode):
                assert np.array_equal(observation["canvas"][row, step].numpy(), shown["canvas"])
                shown = env.step(action)[0]
    finally:
        env.close()


@pytest.mark.parametrize("augment", [("channels",), ("channels", "mirror")])
def test_a_permuted_or_mirrored_episode_is_what_the_env_paints_for_its_permuted_or_mirrored_strokes(augment):
    config = replace(PEN, use_color=True, color_levels=5, background=(255, 255, 255))
    codec = ActionCodec(config)
    rng = np.random.default_rng(0)
    actions = [np.stack([rng.integers(codec.nvec) for _ in range(config.episode_length)]) for _ in range(16)]
    for episode in actions:
        episode[:, codec.index["flag"]] = PAINT
    target = cross()
    target[:, :5] = (200, 30, 90)  # a target that no permutation or mirror leaves as it is
    episodes = replay(config, np.stack([target] * 16), actions)
    original = episodes.batch(np.arange(16))
    observation, labels = episodes.batch(np.arange(16), symmetries=Symmetries.of(config, augment),
                                         rng=np.random.default_rng(1))
    # The env paints each episode's permuted (and mirrored) strokes on its permuted (and mirrored) target as the
    # batch shows it, to within one level of 255 (libmypaint takes colours as HSV and rounds) on a few pixels.
    targets = observation["target"][:, 0].numpy()
    repainted = replay(config, targets, list(labels.numpy()))
    difference = (repainted.canvases.int() - observation["canvas"].int()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01, (difference > 0).float().mean()
    assert torch.equal(observation["prev_action"][:, 1:], labels[:, :-1])
    transforms = {(order, mirrored): target[:, ::-1][..., list(order)] if mirrored else target[..., list(order)]
                  for order in itertools.permutations(range(3)) for mirrored in (False, True)}
    drawn = [next(key for key, image in transforms.items() if np.array_equal(image, shown)) for shown in targets]
    assert len({order for order, _ in drawn}) >= 4 and {mirrored for _, mirrored in drawn} == {"mirror" in augment,
                                                                                                False}
    assert not torch.equal(labels, original[1])
    with pytest.raises(ValueError, match="--augment channels permutes the strokes' colours, and this action space "
                                         "has none"):
        Symmetries.of(PEN, ("channels",))


def test_pretraining_can_change_the_network_but_not_the_environment(demos_file, tmp_path):
    settings = PretrainSettings(batch=4, held_out=0.25, eval_paintings=1)
    with pytest.raises(ValueError, match="only the network"):
        Pretrainer.start(demos_file, tmp_path / "bad", settings, progress=False, network_overrides=["env.grid_size=8"])
    assert not (tmp_path / "bad").exists()
    overrides = ["network.fine_channels=4", "network.pen_map=true"]
    trainer = Pretrainer.start(demos_file, tmp_path / "run", settings, progress=False, network_overrides=overrides)
    trainer.run(steps=1)
    trainer.close()
    assert trainer.policy.config.fine_channels == 4 and trainer.policy.config.pen_map
    resumed = Pretrainer(tmp_path / "run", progress=False)  # the overrides hold for the rest of the run
    assert resumed.policy.config == trainer.policy.config
    resumed.close()
    agent = load_agent(tmp_path / "run" / "agent")
    assert agent.manifest.network == trainer.policy.config
    assert np.isfinite(agent.paint(trainer.demos.targets()[0], seed=0, greedy=True).l2)


@pytest.fixture
def clone(demos_file, tmp_path) -> Pretrainer:
    """A pretraining run in tmp_path/run after two steps (closed): its agent is a student, or a teacher."""
    trainer = Pretrainer.start(demos_file, tmp_path / "run", PretrainSettings(batch=4, held_out=0.25, eval_paintings=0),
                               progress=False)
    trainer.run(steps=2)
    trainer.close()
    return trainer


def test_corrections_label_the_students_states_and_pretraining_learns_from_them(preset, demos_file, clone, tmp_path):
    trainer, settings = clone, clone.settings
    student = tmp_path / "run" / "agent"
    out = tmp_path / "corrections.jsonl"
    summary = generate_demonstrations(preset, 6, SEARCH, out, workers=2, progress=False, student=student)
    corrections = read_demonstrations(out)
    assert summary.total == 6 and corrections.student["agent"] == str(student.resolve())
    agent = load_agent(student)
    for demo, target in zip(corrections.demos, corrections.targets()):
        painted = agent.paint(target, seed=demo.index, greedy=True)
        assert demo.actions.tolist() == painted.actions and demo.mse == painted.l2  # the student's own episode
        assert demo.labels.shape == demo.actions.shape
        labels, error = label_episode(preset.paint_config(), target, demo.actions,
                                      np.random.default_rng([SEARCH.seed, demo.index]), bank=SEARCH.bank,
                                      jumps=SEARCH.jumps, guided=SEARCH.guided, refine=SEARCH.refine)
        assert labels.tolist() == demo.labels.tolist() and error == demo.mse
    assert any(not np.array_equal(demo.labels, demo.actions) for demo in corrections.demos)
    tolerant = generate_demonstrations(preset, 6, SEARCH, tmp_path / "tolerant.jsonl", progress=False,
                                       student=student, tolerance=0.5).path
    tolerant_corrections = read_demonstrations(tolerant)
    assert tolerant_corrections.student == corrections.student | {"tolerance": 0.5}
    strict_by_index = {demo.index: demo for demo in corrections.demos}
    for lenient in tolerant_corrections.demos:
        strict = strict_by_index[lenient.index]
        own = (lenient.labels == lenient.actions).all(1)
        assert np.array_equal(lenient.labels[~own], strict.labels[~own]) and lenient.mse == strict.mse
    with pytest.raises(ValueError, match="other settings"):  # a file is extended with its own tolerance only
        generate_demonstrations(preset, 6, SEARCH, tolerant, progress=False, student=student)
    with pytest.raises(ValueError, match="needs a student"):
        generate_demonstrations(preset, 6, SEARCH, tmp_path / "none.jsonl", progress=False, tolerance=0.1)
    # Demonstrations and corrections do not mix up: each goes where it belongs.
    with pytest.raises(ValueError, match="other settings"):
        generate_demonstrations(preset, 6, SEARCH, demos_file, progress=False, student=student)
    with pytest.raises(ValueError, match="is a corrections file"):
        Pretrainer.start(out, tmp_path / "other", settings, progress=False)
    with pytest.raises(ValueError, match="not a corrections file"):
        Pretrainer(tmp_path / "run", progress=False, corrections=[demos_file])

    resumed = Pretrainer(tmp_path / "run", progress=False, corrections=[out])
    held_out = set(resumed.record["held_out"])
    assert len(resumed.train_rows) == len(trainer.train_rows) + sum(index not in held_out for index in range(6))
    assert len(resumed.held_rows) == len(trainer.held_rows)  # measured on the search's own demonstrations only
    row = len(resumed.demos.demos)  # the first correction: the student's canvases, the search's labels
    observation, imitated = resumed.episodes.batch(np.array([row]))
    assert torch.equal(imitated[0], torch.as_tensor(corrections.demos[0].labels))
    assert torch.equal(observation["prev_action"][0, 1], torch.as_tensor(corrections.demos[0].actions[0]))
    resumed.run(steps=1)
    resumed.close()
    again = Pretrainer(tmp_path / "run", progress=False)  # the run remembers its corrections
    assert [file.path for file in again.corrections] == [out.resolve()] and again.step == 3
    again.close()


def test_an_agent_teaches_with_its_proposals_and_its_paintings_are_cloned_back(preset, clone, tmp_path, monkeypatch):
    """Expert iteration: the teacher paints each image greedy, each stroke the best of K it proposes; the file is a
    demonstrations file like the search's, that replays exactly, resumes, and pretraining clones."""
    settings, folder = clone.settings, tmp_path / "run" / "agent"
    out = tmp_path / "taught.jsonl"
    summary = generate_demonstrations(preset, 3, AgentTeacher(folder, proposals=4), out, progress=False)
    assert (summary.total, summary.new) == (3, 3)
    taught = read_demonstrations(out)
    assert "search" not in taught.header and taught.student is None
    assert taught.header["teacher"] == {"agent": str(folder.resolve()), "proposals": 4, "seed": 0,
                                        "policy_sha256": hashlib.sha256((folder / "policy.pt").read_bytes()).hexdigest()}
    agent = load_agent(folder)
    for demo, target in zip(taught.demos, taught.targets()):
        painted = agent.paint(target, seed=image_seed(0, demo.index), greedy=True, proposals=4)
        assert demo.actions.tolist() == painted.actions and demo.mse == painted.l2
        assert replayed_l2(taught.config, target, demo.actions) == demo.mse
    greedy = [agent.paint(target, seed=0, greedy=True).l2 for target in taught.targets()]
    assert summary.mean_mse <= np.mean(greedy)  # each stroke the best of the policy's own choice and three more
    refined = read_demonstrations(generate_demonstrations(preset, 3, AgentTeacher(folder, proposals=4, refine=2),
                                                          tmp_path / "refined.jsonl", progress=False).path)
    assert refined.header["teacher"] == taught.header["teacher"] | {"refine": 2}  # named only where it refines
    for demo, target in zip(refined.demos, refined.targets()):
        painted = agent.paint(target, seed=image_seed(0, demo.index), greedy=True, proposals=4, refine=2)
        assert demo.actions.tolist() == painted.actions and demo.mse == painted.l2
        assert replayed_l2(refined.config, target, demo.actions) == demo.mse

    # A rerun asking for more paints only the new images, in two processes, as this one would have.
    monkeypatch.setattr(spiral.agent, "PAINT_BATCH", 2)  # two batches for two workers
    summary = generate_demonstrations(preset, 7, AgentTeacher(folder, proposals=4), out, workers=2, progress=False)
    assert (summary.total, summary.new) == (7, 4)
    serial = read_demonstrations(generate_demonstrations(preset, 7, AgentTeacher(folder, proposals=4),
                                                         tmp_path / "serial.jsonl", progress=False).path)
    assert [demo.actions.tolist() for demo in read_demonstrations(out).demos] == \
        [demo.actions.tolist() for demo in serial.demos]

    with pytest.raises(ValueError, match=r"other settings \(teacher: .*\"proposals\": 4.*\"proposals\": 2"):
        generate_demonstrations(preset, 8, AgentTeacher(folder, proposals=2), out, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(search: the file has null, asked .*; teacher: "):
        generate_demonstrations(preset, 8, SEARCH, out, progress=False)
    with pytest.raises(ValueError, match="a teacher or a student, not both"):
        generate_demonstrations(preset, 3, AgentTeacher(folder), tmp_path / "both.jsonl", progress=False,
                                student=folder)
    with pytest.raises(ValueError, match="proposals must be an integer >= 1, got 0"):
        AgentTeacher(folder, proposals=0)
    with pytest.raises(ValueError, match="refine must be an integer >= 0, got -1"):
        AgentTeacher(folder, refine=-1)
    generator = untrained_agent(preset.paint_config(), conditional=False, network=preset.network_config())
    write_agent(tmp_path / "generator", generator.policy.state_dict(), {}, generator.manifest)
    with pytest.raises(ValueError, match="The teacher .* paints from scratch"):
        generate_demonstrations(preset, 3, AgentTeacher(tmp_path / "generator"), tmp_path / "x.jsonl", progress=False)
    other = Experiment.from_dict(preset.to_dict() | {"env": preset.env | {"grid_size": 8}})
    with pytest.raises(ValueError, match="The teacher .* paints with other environment settings"):
        generate_demonstrations(other, 3, AgentTeacher(folder), tmp_path / "x.jsonl", progress=False)
    assert not (tmp_path / "x.jsonl").exists()  # refused before anything is written
    lines = out.read_text().splitlines()
    both = json.loads(lines[0]) | {"search": asdict(SEARCH)}
    (tmp_path / "two.jsonl").write_text("\n".join([json.dumps(both), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="one of 'search' or 'teacher', got \\['search', 'teacher'\\]"):
        read_demonstrations(tmp_path / "two.jsonl")

    # The next round's agent: cloned from the teacher's paintings, starting from the teacher's weights.
    student = Pretrainer.start(out, tmp_path / "next", settings, progress=False, init_from=folder)
    assert student.record["demonstrations_header"]["teacher"] == taught.header["teacher"]
    student.run(steps=1)
    student.close()
    assert load_agent(tmp_path / "next" / "agent").paint_config == preset.paint_config()


def test_the_teacher_command(preset, tmp_path, capsys):
    painter = untrained_agent(preset.paint_config(), conditional=True, network=preset.network_config(), name="tiny")
    teacher = write_agent(tmp_path / "teacher", painter.policy.state_dict(), {}, painter.manifest)
    preset_file, out = tmp_path / "tiny-pen.toml", tmp_path / "taught.jsonl"
    preset_file.write_text(TINY_PEN)
    command = ["demos", "--preset", str(preset_file), "--count", "2", "--out", str(out), "--teacher", str(teacher)]
    main(command + ["--proposals", "3", "--seed", "5", "--refine", "2"])
    assert "2 demonstrations" in capsys.readouterr().out
    assert read_demonstrations(out).header["teacher"]["proposals"] == 3
    assert read_demonstrations(out).header["teacher"]["seed"] == 5
    assert read_demonstrations(out).header["teacher"]["refine"] == 2
    main(command[:-4] + ["--out", str(tmp_path / "eight.jsonl"), "--teacher", str(teacher)])
    assert read_demonstrations(tmp_path / "eight.jsonl").header["teacher"]["proposals"] == 8  # the default
    assert "refine" not in read_demonstrations(tmp_path / "eight.jsonl").header["teacher"]  # the default: none
    for extra, message in ((["--bank", "9", "--guided", "0"], "--bank, --guided set the search; a --teacher agent "
                                                              "paints instead"),
                           (["--proposals", "0"], "argument --proposals: must be > 0")):
        with pytest.raises(SystemExit):
            main(command + extra)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(command[:-2] + ["--proposals", "4"])
    assert "--proposals are a --teacher agent's strokes to choose from: name the teacher" in capsys.readouterr().err


def test_a_generator_clones_an_agents_programs_and_paints_from_scratch(preset, tmp_path, capsys):
    painter = untrained_agent(preset.paint_config(), conditional=True, network=preset.network_config(), name="tiny")
    folder = write_agent(tmp_path / "painter", painter.policy.state_dict(), {}, painter.manifest)
    programs = tmp_path / "programs.jsonl"
    generate_programs(folder, "mnist", programs, count=24, progress=False)
    settings = PretrainSettings(batch=8, held_out=0.25, eval_every=100)
    trainer = Pretrainer.start(programs, tmp_path / "run", settings, progress=False)
    assert not trainer.conditional and not trainer.policy.conditional
    assert np.array_equal(trainer.episodes.final_mse, [demo.mse for demo in trainer.demos.demos])
    before = trainer.held_out_nll()
    measured = trainer.run(steps=15)
    trainer.close()
    assert measured["held_out_nll"] < before - 0.3, (before, measured)
    assert "greedy_mse" not in measured  # a generator is judged by `spiral eval --samples`, not against targets
    generator = load_agent(tmp_path / "run" / "agent")
    assert generator.manifest.name == "tiny-gen" and not generator.conditional
    assert generator.manifest.network == preset.network_config() and generator.paint_config == preset.paint_config()
    assert len(generator.paint(seed=1).actions) == 4
    with pytest.raises(ValueError, match="Corrections label a reconstruction agent's states"):
        Pretrainer(tmp_path / "run", progress=False, corrections=[programs])

    main(["pretrain", "--demos", str(programs), "--out", str(tmp_path / "cli"), "--steps", "1", "--batch", "4"])
    assert "agent:" in capsys.readouterr().out and not load_agent(tmp_path / "cli" / "agent").conditional


def test_a_generator_learns_from_more_programs_of_the_same_images(preset, demos_file, tmp_path):
    painter = untrained_agent(preset.paint_config(), conditional=True, network=preset.network_config(), name="tiny")
    folder = write_agent(tmp_path / "painter", painter.policy.state_dict(), {}, painter.manifest)
    greedy, sampled = tmp_path / "greedy.jsonl", tmp_path / "sampled.jsonl"
    generate_programs(folder, "mnist", greedy, count=24, progress=False)
    generate_programs(folder, "mnist", sampled, count=24, greedy=False, seed=1, progress=False)
    trainer = Pretrainer.start(greedy, tmp_path / "run", PretrainSettings(batch=4, held_out=0.25), progress=False)
    trainer.run(steps=1)
    trainer.close()
    with pytest.raises(ValueError, match="is the run's own programs file"):
        Pretrainer(tmp_path / "run", progress=False, programs=[greedy])
    with pytest.raises(ValueError, match="Not a spiral programs file"):
        Pretrainer(tmp_path / "run", progress=False, programs=[demos_file])
    Pretrainer.start(demos_file, tmp_path / "reconstruction", PretrainSettings(batch=4), progress=False).close()
    with pytest.raises(ValueError, match="More programs files teach a generator"):
        Pretrainer(tmp_path / "reconstruction", progress=False, programs=[sampled])
    resumed = Pretrainer(tmp_path / "run", progress=False, programs=[sampled])
    held_out = set(resumed.record["held_out"])
    assert len(held_out) == 6 and len(resumed.held_rows) == 6  # measured on the run's own programs alone
    assert len(resumed.train_rows) == 2 * 18 and len(resumed.episodes.final_mse) == 48  # both files, held-out out
    painted = read_programs(sampled)
    kept = [record.mse for record in painted.records if record.index not in held_out]
    assert np.allclose(resumed.episodes.final_mse[resumed.train_rows[18:]], kept)
    assert any(not np.array_equal(extra.actions, own.actions)  # other strokes for the same digits
               for extra, own in zip(resumed.more_programs[0].demos, resumed.demos.demos))
    resumed.run(steps=1)
    resumed.close()
    again = Pretrainer(tmp_path / "run", progress=False)  # remembered
    assert [Path(file.path) for file in again.more_programs] == [sampled.resolve()] and again.step == 2
    again.close()
    with pytest.raises(SystemExit, match="--programs are added to a run that has learned from its own file"):
        main(["pretrain", "--demos", str(greedy), "--out", str(tmp_path / "cli"), "--programs", str(sampled)])


def test_pretraining_resumes_from_its_checkpoint(demos_file, tmp_path):
    settings = PretrainSettings(batch=4, held_out=0.25, eval_paintings=0)
    trainer = Pretrainer.start(demos_file, tmp_path / "run", settings, progress=False)
    trainer.run(steps=2)
    trainer.close()
    with pytest.raises(ValueError, match="already holds a pretraining run"):
        Pretrainer.start(demos_file, tmp_path / "run", settings, progress=False)
    resumed = Pretrainer(tmp_path / "run", progress=False)
    assert resumed.step == 2 and resumed.optimizer.state_dict()["state"]
    for key, value in resumed.policy.state_dict().items():
        assert torch.equal(value, trainer.policy.state_dict()[key])
    assert resumed.sampler.integers(1000) == trainer.sampler.integers(1000)  # the batches go on as they would have
    resumed.run(steps=1)
    resumed.close()
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 3


def test_a_resumed_run_may_change_its_precision_and_nothing_else_it_fixed(demos_file, tmp_path, monkeypatch):
    run = tmp_path / "run"
    settings = PretrainSettings(batch=4, held_out=0.25, eval_paintings=0)
    Pretrainer.start(demos_file, run, settings, progress=False).close()
    with pytest.raises(ValueError, match="keeps its batch: only lr, precision, eval_every, brush, anneal, lr_end, "
                                         "augment can "):
        Pretrainer(run, progress=False, batch=8)
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'half'"):
        Pretrainer(run, progress=False, precision="half")
    if spiral.policy.bfloat16_supported(torch.device("cpu")):
        resumed = Pretrainer(run, progress=False, precision="bfloat16")
        resumed.run(steps=1)
        resumed.close()
        assert json.loads((run / "pretrain.json").read_text())["settings"]["precision"] == "bfloat16"
        # The steps train in bf16 (the NLL differs from float32's by rounding only); the held-out NLL stays float32.
        observation, actions = resumed.episodes.batch(resumed.train_rows[:4], resumed.conditional)
        float32, bfloat16 = (nll(resumed.policy, observation, actions, precision)
                             for precision in PRECISIONS)
        assert not torch.equal(float32, bfloat16) and torch.allclose(float32, bfloat16, rtol=0.05)
    # A run moved to a CPU without AVX-512 BF16 or AMX is refused when it resumes, before it trains.
    monkeypatch.setattr(spiral.policy, "bfloat16_supported", lambda device: False)
    recorded = (run / "pretrain.json").read_text()
    with pytest.raises(ValueError, match="needs bf16 arithmetic, which this cpu lacks"):
        Pretrainer(run, progress=False, precision="bfloat16")
    assert (run / "pretrain.json").read_text() == recorded  # a refused change is not recorded


def test_a_run_paints_its_demonstrations_with_another_brush_from_the_start_or_from_a_resume(demos_file, tmp_path):
    settings = PretrainSettings(batch=4, held_out=0.25, eval_paintings=0)
    demos = read_demonstrations(demos_file)
    soft = replace(demos.config, brush="spiral/soft_pen")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the MSEs differ from the recorded ones: expected with another brush
        trainer = Pretrainer.start(demos_file, tmp_path / "run", replace(settings, brush="spiral/soft_pen"),
                                   progress=False)
    trainer.run(steps=1)
    trainer.close()
    actions = [demo.actions for demo in demos.demos]
    assert trainer.config == soft and torch.equal(trainer.episodes.canvases, replay(soft, demos.targets(), actions).canvases)
    assert not torch.equal(trainer.episodes.canvases, replay(demos.config, demos.targets(), actions).canvases)
    assert load_agent(tmp_path / "run" / "agent").paint_config == soft  # the agent paints with the brush it learned on
    assert json.loads((tmp_path / "run" / "experiment.json").read_text())["env"]["brush"] == "spiral/soft_pen"

    Pretrainer.start(demos_file, tmp_path / "crisp", settings, progress=False).close()
    resumed = Pretrainer(tmp_path / "crisp", progress=False, brush="spiral/soft_pen")  # from now on
    assert resumed.config == soft and torch.equal(resumed.episodes.canvases, trainer.episodes.canvases)
    resumed.close()
    assert json.loads((tmp_path / "crisp" / "pretrain.json").read_text())["settings"]["brush"] == "spiral/soft_pen"
    assert json.loads((tmp_path / "crisp" / "experiment.json").read_text())["env"]["brush"] == "spiral/soft_pen"
    with pytest.raises(ValueError, match="brush: Unknown brush 'classic/no_such_pen'"):
        Pretrainer(tmp_path / "crisp", progress=False, brush="classic/no_such_pen")


def test_a_new_run_starts_from_an_agents_weights_with_a_new_brush_and_refuses_one_that_does_not_fit(
        demos_file, tmp_path, capsys):
    settings = PretrainSettings(batch=4, held_out=0.25, eval_paintings=0)
    first = Pretrainer.start(demos_file, tmp_path / "first", settings, progress=False)
    first.run(steps=2)
    first.close()
    agent = tmp_path / "first" / "agent"
    trainer = Pretrainer.start(demos_file, tmp_path / "again", replace(settings, brush="spiral/soft_pen"),
                               progress=False, init_from=agent)
    assert trainer.step == 0 and not trainer.optimizer.state_dict()["state"]  # the weights, not the optimizer
    for key, value in load_agent(agent).policy.state_dict().items():
        assert torch.equal(value, trainer.policy.state_dict()[key])
    trainer.run(steps=1)
    trainer.close()
    assert json.loads((tmp_path / "again" / "pretrain.json").read_text())["init_from"] == str(agent.resolve())
    resumed = Pretrainer(tmp_path / "again", progress=False)  # from its checkpoint, not from the agent again
    start = load_agent(agent).policy.state_dict()
    assert resumed.step == 1 and any(not torch.equal(value, start[key])
                                     for key, value in resumed.policy.state_dict().items())
    resumed.close()

    with pytest.raises(ValueError, match=r"--init-from .*first.agent was trained with network.hidden=32; this "
                                         r"experiment uses network.hidden=16"):
        Pretrainer.start(demos_file, tmp_path / "wider", settings, progress=False, init_from=agent,
                         network_overrides=["network.hidden=16"])
    with pytest.raises(ValueError, match="--init-from must be an exported agent folder .* no such folder"):
        Pretrainer.start(demos_file, tmp_path / "nothing", settings, progress=False, init_from=tmp_path / "none")
    assert not (tmp_path / "wider").exists() and not (tmp_path / "nothing").exists()
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(tmp_path / "again"), "--resume", "--init-from", str(agent)])
    assert "leave out --init-from" in capsys.readouterr().err


def test_the_commands(tmp_path, capsys):
    preset = tmp_path / "tiny-pen.toml"
    preset.write_text(TINY_PEN)
    demos = tmp_path / "demos.jsonl"
    main(["demos", "--preset", str(preset), "--count", "4", "--bank", "6", "--out", str(demos)])
    assert "4 demonstrations" in capsys.readouterr().out
    assert read_demonstrations(demos).header["search"] == {"bank": 6, "jumps": 1, "jump_factor": 2.0, "guided": 1.0,
                                                           "refine": 4, "seed": 0}
    with pytest.raises(SystemExit):
        main(["demos", "--preset", str(preset), "--count", "4", "--guided", "1.5", "--out", str(demos)])
    assert "must be a fraction in [0, 1], got 1.5" in capsys.readouterr().err
    run = tmp_path / "run"
    main(["pretrain", "--demos", str(demos), "--out", str(run), "--steps", "2", "--batch", "4"])
    assert "agent:" in capsys.readouterr().out and (run / "agent" / "agent.json").is_file()
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(run), "--resume", "--batch", "8"])
    assert "leave out --batch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(run), "--resume", "--precision", "float16"])
    assert "precision must be one of float32, bfloat16, got 'float16'" in capsys.readouterr().err
    main(["pretrain", "--out", str(run), "--resume", "--steps", "1"])
    assert load_agent(run / "agent").manifest.training.iterations == 3
    # A last stage at a lower rate: recorded in the run, and what the restored optimizer steps with.
    main(["pretrain", "--out", str(run), "--resume", "--steps", "1", "--lr", "2e-4", "--eval-every", "5",
          "--brush", "spiral/soft_pen"])
    settings = json.loads((run / "pretrain.json").read_text())["settings"]
    assert (settings["lr"], settings["eval_every"], settings["brush"]) == (2e-4, 5, "spiral/soft_pen")
    assert load_agent(run / "agent").paint_config.brush == "spiral/soft_pen"
    resumed = Pretrainer(run, progress=False)
    assert resumed.step == 4 and {group["lr"] for group in resumed.optimizer.param_groups} == {2e-4}
    resumed.close()
    # An anneal from the step reached: 2e-4 down a half cosine to 1e-5 over 2 steps, then 1e-5; a new --lr ends it.
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(run), "--resume", "--steps", "1", "--anneal", "2"])
    assert "anneal and lr_end go together" in capsys.readouterr().err
    main(["pretrain", "--out", str(run), "--resume", "--steps", "1", "--anneal", "2", "--lr-end", "1e-5"])
    settings = json.loads((run / "pretrain.json").read_text())["settings"]
    assert (settings["anneal"], settings["lr_end"]) == ([4, 6], 1e-5)
    resumed = Pretrainer(run, progress=False)
    assert resumed.step == 5 and {group["lr"] for group in resumed.optimizer.param_groups} == {(2e-4 + 1e-5) / 2}
    resumed.run(steps=2)
    assert {group["lr"] for group in resumed.optimizer.param_groups} == {1e-5}
    resumed.close()
    main(["pretrain", "--out", str(run), "--resume", "--steps", "1", "--lr", "3e-4", "--augment", "mirror"])
    settings = json.loads((run / "pretrain.json").read_text())["settings"]
    assert (settings["lr"], settings["anneal"], settings["lr_end"], settings["augment"]) == (3e-4, None, None,
                                                                                              ["mirror"])
    resumed = Pretrainer(run, progress=False)
    assert resumed.symmetries == Symmetries(colours=(), points=(1, 2), grid=4)  # flag, end, control, size
    resumed.close()
    recorded = (run / "pretrain.json").read_text()
    with pytest.raises(SystemExit):  # the tiny preset paints in one colour: refused, and nothing recorded
        main(["pretrain", "--out", str(run), "--resume", "--steps", "1", "--augment", "channels"])
    assert "--augment channels permutes the strokes' colours" in capsys.readouterr().err
    assert (run / "pretrain.json").read_text() == recorded
    with pytest.raises(SystemExit):
        main(["pretrain", "--demos", str(demos), "--out", str(tmp_path / "new"), "--augment", "channels"])
    assert "--augment channels permutes" in capsys.readouterr().err and not (tmp_path / "new").exists()
