"""A generator's class-mix correction (spiral.class_mix, spiral class-mix): a classifier trained on real programs,
written into an agent folder, and applied by Agent.paint_all as redraws that a seed still determines."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from spiral.agent import Agent, load_agent, load_weights, set_temperature, write_agent, write_average
from spiral.class_mix import MixSettings, kept, redraw_seed, train_class_mix
from spiral.cli import CommandError, main
from spiral.manifest import AgentManifest, ClassMix
from spiral.programs import generate_programs, read_programs
from spiral.shipped import AGENTS_DIR

SHIPPED, PAINTER = AGENTS_DIR / "mnist-pen-gen", AGENTS_DIR / "mnist-pen"


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """The shipped generator without its correction: what `spiral class-mix` was given."""
    manifest = dataclasses.replace(load_agent(SHIPPED).manifest, class_mix=None)
    return write_agent(tmp_path_factory.mktemp("agents") / "gen", load_weights(SHIPPED / "policy.pt"),
                       load_weights(SHIPPED / "discriminator.pt"), manifest, provenance=SHIPPED)


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """Programs of 24 training digits painted by the shipped reconstruction agent (what the generator cloned)."""
    out = tmp_path_factory.mktemp("programs") / "programs.jsonl"
    generate_programs(PAINTER, "mnist", out, count=24, progress=False)
    return out


@pytest.fixture(scope="module")
def corrected(generator, programs, tmp_path_factory):
    """The shipped generator with a correction made from a few samples, written by the command a user runs."""
    out = tmp_path_factory.mktemp("agents") / "gen-mix"
    main(["class-mix", "--agent", str(generator), "--programs", str(programs), "--out", str(out),
          "--samples", "20", "--epochs", "1", "--tries", "3"])
    return out


def with_accept(agent: Agent, accept: float, tries: int = 2) -> Agent:
    classes = len(agent.manifest.class_mix.accept)
    manifest = dataclasses.replace(agent.manifest, class_mix=ClassMix((accept,) * classes, tries))
    return Agent(agent.policy, manifest, agent.mix_classifier)


def test_the_shipped_generator_corrects_its_mix():
    class_mix = load_agent(SHIPPED).manifest.class_mix
    assert class_mix is not None and len(class_mix.accept) == 10 and max(class_mix.accept) == 1


def test_the_written_agent_is_the_generator_with_its_correction(generator, corrected):
    agent, plain = load_agent(corrected), load_agent(generator)
    assert agent.manifest.class_mix.tries == 3 and len(agent.manifest.class_mix.accept) == 10
    assert max(agent.manifest.class_mix.accept) == 1  # the class painted least often, against its share, is kept
    assert dataclasses.replace(agent.manifest, class_mix=None) == plain.manifest
    for key, value in plain.policy.state_dict().items():
        assert np.array_equal(value.numpy(), agent.policy.state_dict()[key].numpy()), key
    assert (corrected / "experiment.json").read_text() == (SHIPPED / "experiment.json").read_text()
    assert sorted(path.name for path in (corrected / "tb").iterdir()) == sorted(
        path.name for path in (SHIPPED / "tb").iterdir())


def test_a_seed_names_one_painting_the_generators_own_or_a_redraw(generator, corrected):
    agent, plain = load_agent(corrected), load_agent(generator)
    seeds = list(range(16))
    episodes = agent.paint_all(seeds=seeds)
    again = agent.paint_all(seeds=seeds)
    assert all(np.array_equal(a.canvas, b.canvas) for a, b in zip(episodes, again))
    own = plain.paint_all(seeds=[redraw_seed(seed, episode.draws - 1) for seed, episode in zip(seeds, episodes)])
    for seed, episode, unfiltered in zip(seeds, episodes, own):
        assert np.array_equal(episode.canvas, unfiltered.canvas)  # the generator's painting of the seed it drew
        kept_it = kept(agent.mix_classifier, agent.manifest.class_mix, episode.canvas[None], [seed], episode.draws - 1)
        assert kept_it[0] or episode.draws == agent.manifest.class_mix.tries  # kept, or out of tries


@pytest.mark.parametrize("accept, draws", [(1.0, 1), (1e-6, 2)])
def test_the_acceptance_decides_the_redraws(generator, corrected, accept, draws):
    agent = with_accept(load_agent(corrected), accept, tries=2)
    episodes = agent.paint_all(seeds=[0, 1, 2])
    assert [episode.draws for episode in episodes] == [draws] * 3
    if draws == 1:  # every sample kept: the generator's own paintings
        own = load_agent(generator).paint_all(seeds=[0, 1, 2])
        assert all(np.array_equal(a.canvas, b.canvas) for a, b in zip(episodes, own))


def test_greedy_paintings_and_other_temperatures_are_not_redrawn(corrected):
    agent = with_accept(load_agent(corrected), 1e-6)
    assert [episode.draws for episode in agent.paint_all(seeds=[0, 1], greedy=True)] == [1, 1]
    assert [episode.draws for episode in agent.paint_all(seeds=[0, 1], temperature=0.9)] == [1, 1]
    first, later = agent.sampling_temperatures()
    own = agent.paint_all(seeds=[0, 1], temperature=later, first_stroke_temperature=first)
    assert [episode.draws for episode in own] == [2, 2]  # its own temperatures, named: corrected


def test_an_average_does_not_keep_a_correction_of_other_weights(generator, corrected, tmp_path):
    average = load_agent(write_average(tmp_path / "mean", [corrected, generator]))
    assert average.manifest.class_mix is None and average.mix_classifier is None
    assert not (tmp_path / "mean" / "mix_classifier.pt").exists()


def test_its_temperatures_stay_those_it_was_measured_at(corrected, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(corrected, copy)
    with pytest.raises(ValueError, match="measured at its temperatures"):
        set_temperature(copy, 0.9)
    assert (copy / "agent.json").read_text() == (corrected / "agent.json").read_text()


def test_the_mix_is_measured_against_the_programs_labels(generator, programs):
    trained = train_class_mix(load_agent(generator), read_programs(programs), MixSettings(samples=20, epochs=1),
                              progress=False)
    labels, classes = read_programs(programs).labels()
    assert classes == 10 and len(labels) == 24
    assert np.allclose(trained.data_mix, np.bincount(labels, minlength=10) / 24)
    assert np.isclose(trained.own_mix.sum(), 1) and np.all(trained.own_mix > 0)
    assert max(trained.class_mix.accept) == 1 and min(trained.class_mix.accept) > 0
    assert 1 <= trained.mean_draws <= trained.class_mix.tries and 0 <= trained.held_out_accuracy <= 1


def test_bad_input_is_refused(generator, programs, tmp_path):
    def run(agent, out, *extra):
        main(["class-mix", "--agent", str(agent), "--programs", str(programs), "--out", str(tmp_path / out),
              "--samples", "4", "--epochs", "1", *extra])

    with pytest.raises(CommandError, match="reconstructs targets"):
        run(PAINTER, "a")
    with pytest.raises(CommandError, match="corrects its class mix already"):
        run(SHIPPED, "b")
    with pytest.raises(CommandError, match="tries must be a whole number from 1 to 16"):
        run(generator, "c", "--tries", "17")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_programs_of_unlabelled_images_are_refused(generator, tmp_path):
    images = tmp_path / "sketches"
    images.mkdir()
    for index in range(10):  # enough programs for a classifier: the labels are what is missing
        Image.fromarray(np.full((28, 28), 25 * index, np.uint8)).save(images / f"{index}.png")
    generate_programs(PAINTER, f"folder:{images}", tmp_path / "programs.jsonl", progress=False)
    with pytest.raises(CommandError, match="have no class labels"):
        main(["class-mix", "--agent", str(generator), "--programs", str(tmp_path / "programs.jsonl"),
              "--out", str(tmp_path / "out"), "--samples", "4"])
    assert not (tmp_path / "out").exists()


def test_a_damaged_correction_is_refused_with_its_file_named(corrected, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(corrected, copy)
    (copy / "mix_classifier.pt").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="mix_classifier.pt"):
        load_agent(copy)
    (copy / "mix_classifier.pt").unlink()
    with pytest.raises(ValueError, match="has no mix_classifier.pt"):
        load_agent(copy)
    manifest = json.loads((corrected / "agent.json").read_text())
    for field, value, message in [("tries", 0, "tries must be"), ("tries", 17, "tries must be"),
                                  ("accept", [0.5], "accept must list"), ("accept", [0.5, 1.5], "accept must list"),
                                  ("accept", 0.5, "must be a JSON list"), ("accept", ["high", 1], "must be a number")]:
        broken = {**manifest, "class_mix": {**manifest["class_mix"], field: value}}
        with pytest.raises(ValueError, match=message):
            AgentManifest.from_dict(broken)
    painter = json.loads((PAINTER / "agent.json").read_text())
    with pytest.raises(ValueError, match="this one reconstructs targets"):
        AgentManifest.from_dict({**painter, "class_mix": manifest["class_mix"]})


def test_the_judges_report_counts_the_redraws(generator, corrected):
    from spiral.classifier import evaluate_generator, load_classifier
    from spiral.datasets import load_dataset

    judge = load_classifier(AGENTS_DIR / "classifiers" / "mnist", "mnist")
    real = load_dataset("mnist", 64, limit=40).test
    report = evaluate_generator(with_accept(load_agent(corrected), 1e-6, tries=3), judge.classifier, real, 8)
    assert report.paintings_per_sample == 3
    assert "paintings per sample" in report.markdown()
    assert evaluate_generator(load_agent(generator), judge.classifier, real, 4).paintings_per_sample == 1
