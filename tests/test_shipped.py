"""The agents that ship in agents/: plain tensors, painting without Ray, and better than the floors.

These fail CI when an export breaks, when the environment changes what a stroke paints, or when
a retrained agent is shipped that no longer beats the baselines.
"""

import json
import subprocess
import sys

import pytest
import torch

from envs import PaintConfig
from spiral.agent import load_agent
from spiral.classifier import DEFAULT_DIR, evaluate_generator, load_classifier
from spiral.datasets import load_dataset
from spiral.evaluation import agent_score, blank_score
from spiral.shipped import GENERATION_AGENT, RECONSTRUCTION_AGENT, default_agent, shipped_agents

SHIPPED = shipped_agents()
# The default reconstruction agent's greedy MSE on the first 100 test digits: measured 0.0223 (blank canvas 0.1066)
# for mnist-pen, #10's guard is 0.04: room for libmypaint's rounding across versions, and a failure for an export,
# a loading path or an environment change that turns paintings back into blobs (mnist-l2: 0.075).
GUARD = 0.04
GLYPH_AGENT = "glyphs-pen"
CLASSES = 8  # digits among 100 of the generator's samples (#10; measured: 10 of 10 among 1,000, none above 19%)


def test_the_default_agents_ship_first():
    assert list(SHIPPED)[:2] == [RECONSTRUCTION_AGENT, GENERATION_AGENT]
    assert load_agent(default_agent(conditional=True)).conditional
    assert not load_agent(default_agent(conditional=False)).conditional


@pytest.mark.parametrize("name", list(SHIPPED))
def test_a_shipped_agent_is_plain_tensors_a_few_megabytes_and_documented(name):
    folder = SHIPPED[name]
    for file in ("policy.pt", "discriminator.pt"):  # an agent only pretrained has no discriminator's weights
        state = torch.load(folder / file, map_location="cpu", weights_only=True)
        assert (state or file == "discriminator.pt") and all(isinstance(value, torch.Tensor) for value in state.values())
    weights = sum(path.stat().st_size for path in folder.glob("*.pt"))
    assert weights < 5e6
    experiment = json.loads((folder / "experiment.json").read_text())  # the exact settings it was trained with
    assert PaintConfig.from_dict(experiment["env"]) == load_agent(folder).paint_config
    assert list((folder / "tb").glob("events.out.tfevents.*"))  # its curves: `spiral curves agents/NAME`


def test_shipped_agents_paint_in_a_process_without_ray():
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from spiral.agent import load_agent\n"
        "from spiral.shipped import shipped_agents\n"
        "for folder in shipped_agents().values():\n"
        "    agent = load_agent(folder)\n"
        "    target = np.zeros((28, 28), np.uint8) if agent.conditional else None\n"
        "    episode = agent.paint(target, seed=0)\n"
        "    assert len(episode.program.strokes) == agent.paint_config.episode_length\n"
        "assert 'ray' not in sys.modules, 'painting imported ray'\n"
        "print('painted', len(shipped_agents()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"painted {len(SHIPPED)}"


def greedy_and_blank_mse(agent_folder, dataset: str) -> tuple[float, float]:
    """The agent's greedy MSE and the blank canvas's on the first 100 test images, a fixed held-out sample."""
    agent = load_agent(agent_folder)
    targets = load_dataset(dataset, agent.paint_config.canvas_size, limit=100).test
    return agent_score(agent, targets, greedy=True).mean, blank_score(agent.paint_config, targets).mean


def test_the_shipped_reconstruction_agent_paints_digits_not_blobs():
    agent, blank = greedy_and_blank_mse(default_agent(conditional=True), "mnist")
    assert agent <= GUARD, f"agent {agent:.4f} against blank {blank:.4f}"


def test_the_shipped_glyph_agent_paints_characters_it_never_saw_at_half_the_blank_canvas():
    """#10's glyph target as a guard: the test split's characters are not in the training split."""
    agent, blank = greedy_and_blank_mse(SHIPPED[GLYPH_AGENT], "glyphs")
    assert agent <= 0.5 * blank, f"agent {agent:.4f} against blank {blank:.4f}"


def test_the_shipped_generator_paints_more_than_one_kind_of_digit():
    agent = load_agent(default_agent(conditional=False))
    judge = load_classifier(DEFAULT_DIR / "mnist", "mnist")
    real = load_dataset("mnist", agent.paint_config.canvas_size, limit=400).test
    report = evaluate_generator(agent, judge.classifier, real, samples=100)
    assert report.generated.classes_covered >= CLASSES
