"""Stroke programs of a dataset (spiral.programs, ``spiral programs``): the shipped agents painting a few
MNIST digits with the real libmypaint, every line replayed bit for bit."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import spiral.agent
from envs import PaintConfig, mse
from spiral.agent import load_agent, untrained_agent, write_agent
from spiral.cli import CommandError, main
from spiral.programs import generate_programs, image_seed, read_programs
from spiral.shipped import AGENTS_DIR
from tests.conftest import TINY

L2_AGENT = AGENTS_DIR / "mnist-l2"  # reconstructs targets
RECON_AGENT = AGENTS_DIR / "mnist-recon"  # reconstructs too, other weights
GENERATOR = AGENTS_DIR / "mnist-gen"  # paints from scratch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tests' own paintings on one thread, as generate_programs paints them: on a busy machine, more cost 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def agent():
    return load_agent(L2_AGENT)


@pytest.mark.parametrize(("greedy", "seed"), [(True, 0), (False, 7)])
def test_every_line_replays_to_the_agents_canvas_bit_for_bit(agent, tmp_path, greedy, seed):
    out = tmp_path / "programs.jsonl"
    summary = generate_programs(L2_AGENT, "mnist", out, count=4, split="test", greedy=greedy, seed=seed,
                                progress=False)
    assert (summary.total, summary.new, summary.count) == (4, 4, 4)
    assert summary.mean_mse < summary.blank_mse or not greedy  # sampling does worse on a handful of digits
    header = json.loads(out.read_text().splitlines()[0])
    assert header["format"] == "spiral-programs" and header["version"] == 1
    assert header["data"] == {"dataset": "mnist", "color": False, "invert": False, "split": "test", "seed": 0}
    assert header["paint"] == {"greedy": greedy, "seed": seed} and header["agent"]["name"] == "mnist-l2"
    assert header["env"] == agent.paint_config.to_dict() and header["agent_folder"] == str(L2_AGENT)

    programs = read_programs(out)
    assert programs.indices == [0, 1, 2, 3] and programs.config == agent.paint_config
    assert summary.mean_mse == pytest.approx(np.mean([record.mse for record in programs.records]))
    for record, image in zip(programs.records, programs.images()):
        episode = agent.paint(image, seed=image_seed(seed, record.index), greedy=greedy)
        canvas = programs.canvas(record)
        assert np.array_equal(canvas, episode.canvas)
        assert np.array_equal(record.program.render(), episode.canvas)  # render_scale 1: plainly render()
        assert record.mse == float(mse(canvas, image)) == episode.l2


def test_programs_painted_among_proposals_say_so_and_replay_to_the_agents_canvas(tmp_path):
    pen = AGENTS_DIR / "mnist-pen"
    out = tmp_path / "programs.jsonl"
    # Eight digits: a stroke chosen for the error it leaves can lose over a whole painting on one or two
    # of them (on the first three, 0.0084 against the agent's 0.0079), not on the mean of a few more.
    summary = generate_programs(pen, "mnist", out, count=8, proposals=4, refine=1, progress=False)
    programs = read_programs(out)
    assert programs.header["paint"] == {"greedy": True, "seed": 0, "proposals": 4, "refine": 1}
    agent = load_agent(pen)
    images = programs.images()
    alone = [agent.paint(image, seed=image_seed(0, index), greedy=True).l2 for index, image in enumerate(images)]
    for record, image in zip(programs.records, images):
        episode = agent.paint(image, seed=image_seed(0, record.index), greedy=True, proposals=4, refine=1)
        assert np.array_equal(programs.canvas(record), episode.canvas) and record.mse == episode.l2
    assert summary.mean_mse < np.mean(alone)  # what the proposals are for: nearer the digits than the agent alone
    with pytest.raises(ValueError, match=r"other settings \(paint: .*\"proposals\": 4"):
        generate_programs(pen, "mnist", out, count=8, progress=False)
    with pytest.raises(ValueError, match="proposals must be a whole number of strokes, 1 or more, got 0"):
        generate_programs(pen, "mnist", tmp_path / "none.jsonl", count=1, proposals=0, progress=False)
    assert not (tmp_path / "none.jsonl").exists()


def test_at_a_render_scale_the_canvas_is_the_agents_view_of_the_rendering(tmp_path):
    config = PaintConfig(canvas_size=16, render_scale=2, grid_size=4, episode_length=3, background=(0, 0, 0),
                         fixed_color=(255, 255, 255), use_color=False)
    made = untrained_agent(config, conditional=True, network=TINY, name="scaled")
    folder = write_agent(tmp_path / "scaled", made.policy.state_dict(), {}, made.manifest)
    out = tmp_path / "programs.jsonl"
    generate_programs(folder, "mnist", out, count=2, greedy=False, progress=False)
    programs = read_programs(out)
    agent = load_agent(folder)
    for record, image in zip(programs.records, programs.images()):
        episode = agent.paint(image, seed=image_seed(0, record.index))
        assert record.program.render(scale=2).shape == (32, 32, 3)
        assert np.array_equal(programs.canvas(record), episode.canvas) and record.mse == episode.l2


def test_a_rerun_resumes_after_a_line_cut_short(tmp_path):
    out = tmp_path / "programs.jsonl"
    generate_programs(L2_AGENT, "mnist", out, count=3, progress=False)
    whole = out.read_text()
    lines = whole.splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:40])  # the write of index 2 cut short
    assert read_programs(out).indices == [0, 1]
    summary = generate_programs(L2_AGENT, "mnist", out, count=4, progress=False)
    assert (summary.total, summary.new) == (4, 2)
    text = out.read_text()
    assert text.startswith(whole) and text.endswith("\n")  # index 2 painted again exactly as before
    assert read_programs(out).indices == [0, 1, 2, 3]
    assert generate_programs(L2_AGENT, "mnist", out, count=2, progress=False).new == 0


def test_workers_paint_the_programs_one_process_paints(tmp_path, monkeypatch):
    one, pool = tmp_path / "one.jsonl", tmp_path / "pool.jsonl"
    generate_programs(L2_AGENT, "mnist", one, count=7, greedy=False, seed=3, progress=False)
    monkeypatch.setattr(spiral.agent, "PAINT_BATCH", 2)  # four batches (the last of one image) for two workers
    summary = generate_programs(L2_AGENT, "mnist", pool, count=7, greedy=False, seed=3, workers=2, progress=False)
    assert (summary.total, summary.new) == (7, 7)
    assert pool.read_text().splitlines()[0] == one.read_text().splitlines()[0]  # the same header

    def lines(path):
        return {record.index: record.to_json() for record in read_programs(path).records}

    assert lines(pool) == lines(one)  # bit for bit, whichever worker painted which image
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        generate_programs(L2_AGENT, "mnist", tmp_path / "none.jsonl", count=1, workers=0, progress=False)


def test_a_file_of_other_settings_is_refused_untouched(tmp_path):
    out = tmp_path / "programs.jsonl"
    generate_programs(L2_AGENT, "mnist", out, count=1, progress=False)
    before = out.read_text()
    for settings, key in [({"greedy": False}, "paint"), ({"split": "test"}, "data"), ({"seed": 1}, "paint")]:
        with pytest.raises(ValueError, match=rf"holds programs made with other settings \({key}: "):
            generate_programs(L2_AGENT, "mnist", out, count=1, progress=False, **settings)
    with pytest.raises(ValueError, match=r"other settings \(agent: .*mnist-l2.*mnist-recon"):
        generate_programs(RECON_AGENT, "mnist", out, count=1, progress=False)
    assert out.read_text() == before
    out.write_text(json.dumps({"format": "spiral-demonstrations", "version": 1}) + "\n")
    with pytest.raises(ValueError, match="Not a spiral programs file"):
        generate_programs(L2_AGENT, "mnist", out, count=1, progress=False)


def test_programs_turn_back_into_the_actions_that_painted_them(tmp_path):
    pen = AGENTS_DIR / "mnist-pen"  # pen flag, brush sizes, a 32 grid: every component an action has here
    out = tmp_path / "programs.jsonl"
    generate_programs(pen, "mnist", out, count=3, greedy=False, progress=False)
    programs = read_programs(out)
    demos = programs.demonstrations()
    agent = load_agent(pen)
    assert demos.indices == [0, 1, 2] and demos.student is None and demos.config == agent.paint_config
    for demo, record, image in zip(demos.demos, programs.records, programs.images()):
        episode = agent.paint(image, seed=image_seed(0, record.index))
        assert demo.actions.tolist() == episode.actions and demo.mse == record.mse
    assert np.array_equal(demos.targets(), programs.images())
    experiment = demos.experiment()
    assert experiment.name == "mnist-pen-gen" and not experiment.reward.conditional
    assert experiment.paint_config() == agent.paint_config and experiment.network_config() == agent.manifest.network

    test_split = tmp_path / "test.jsonl"
    generate_programs(pen, "mnist", test_split, count=1, split="test", progress=False)
    with pytest.raises(ValueError, match="paints the test split; a generator learns from training images only"):
        read_programs(test_split).demonstrations()


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "line 3 is not valid JSON"),
    ('{"index": 5, "mse": 0.1}', "line 3 must be an object with index, mse and program"),
    ('{"index": -1, "mse": 0.1, "program": {}}', "line 3: index must be an integer >= 0"),
    ('{"index": 5, "mse": NaN, "program": {}}', "line 3: mse must be a finite number"),
    ('{"index": 5, "mse": 0.1, "program": {"format": "other"}}',
     "line 3: Not a spiral painting program: the program has format 'other'"),
    ("{program}", "line 3: the program .* is not one the header's env paints"),
    ("{first}", "line 3: index 0 appears twice"),
])
def test_a_corrupt_line_is_named(tmp_path, line, message):
    out = tmp_path / "programs.jsonl"
    generate_programs(L2_AGENT, "mnist", out, count=2, progress=False)
    header, first, second = out.read_text().splitlines()
    short = json.loads(first)
    short["program"]["strokes"].pop()
    line = line.replace("{program}", json.dumps(short | {"index": 5})).replace("{first}", first)
    out.write_text("\n".join([header, first, line, second]) + "\n")
    with pytest.raises(ValueError, match=message):
        read_programs(out)


def test_the_command_writes_the_file_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    out = tmp_path / "programs.jsonl"
    main(["programs", "--agent", str(L2_AGENT), "--dataset", "mnist", "--out", str(out), "--count", "2",
          "--sample", "--seed", "3", "--workers", "2"])
    assert "2 programs in" in capsys.readouterr().out and read_programs(out).header["paint"]["greedy"] is False

    folder = tmp_path / "images"
    folder.mkdir()
    for level in (60, 120, 180):
        Image.new("L", (20, 20), level).save(folder / f"grey-{level}.png")
    fresh = tmp_path / "fresh.jsonl"
    for args, message in [
        (["--agent", str(GENERATOR), "--dataset", "mnist"], "paints from scratch (an unconditional agent)"),
        (["--agent", str(L2_AGENT), "--dataset", "mnsit"], "Unknown dataset 'mnsit'"),
        (["--agent", str(L2_AGENT), "--dataset", f"folder:{folder}", "--count", "4"], "images; 4 were asked for"),
    ]:
        with pytest.raises(CommandError) as refused:
            main(["programs", *args, "--out", str(fresh)])
        assert refused.value.code == 2 and message in str(refused.value)
        assert capsys.readouterr().err.count("\n") == 1 and not fresh.exists()

