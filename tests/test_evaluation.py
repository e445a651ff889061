"""Evaluation metrics on cases whose answer is known, and the baselines' order on MNIST."""

import numpy as np
import pytest

from envs import Painter, Stroke
from spiral.agent import untrained_agent
from spiral.evaluation import blank_score, evaluate, mse, random_score, search_score
from spiral.experiment import Experiment
from spiral.policy import NetworkConfig
from tests.conftest import export_untrained


def test_identical_images_score_zero_and_opposites_one():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert mse(image, image) == 0.0
    assert mse(np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)) == 1.0


@pytest.fixture(scope="module")
def mnist():
    experiment = Experiment.from_preset("mnist-recon", ["data.limit=12"])
    return experiment.paint_config(), experiment.images("test")


def test_the_blank_canvas_scores_the_targets_mean_square(mnist):
    config, targets = mnist
    expected = np.mean((targets.astype(np.float64) / 255) ** 2, axis=(1, 2, 3))
    blank = blank_score(config, targets)
    assert blank.mean == pytest.approx(expected.mean())
    assert 0.05 < blank.mean < 0.15  # MNIST at 64 px, white on black: about 0.09


def test_search_beats_the_blank_canvas_which_beats_random_strokes(mnist):
    config, targets = mnist
    targets = targets[:4]
    blank, random, search = blank_score(config, targets), random_score(config, targets), search_score(config, targets, 40)
    assert search.mean < blank.mean < random.mean
    assert search.seconds_per_image > blank.seconds_per_image


def test_a_snapshot_takes_a_stroke_back_exactly():
    painter = Painter(32, 32)
    before = painter.canvas()
    saved = painter.surface.snapshot()
    painter.draw(Stroke((2.0, 2.0), (16.0, 30.0), (30.0, 2.0), True, 3.0, 1.0, (1.0, 0.0, 0.0)))
    assert (painter.canvas() != before).any()
    painter.surface.restore(saved)
    assert (painter.canvas() == before).all()


def test_evaluate_reports_the_agent_and_every_baseline(mnist):
    config, targets = mnist
    agent = untrained_agent(config, True, NetworkConfig(input_size=16, channels=8, res_blocks=1, hidden=32))
    scores = evaluate(agent, targets[:2], bank=5)
    assert [s.name for s in scores] == ["agent (sampled)", "agent (greedy)", "blank canvas", "random policy",
                                        "greedy search (5 strokes)"]
    assert all(0 <= s.mean <= 1 and s.seconds_per_image >= 0 for s in scores)
    assert [s.mean for s in evaluate(agent, targets[:2], bank=0)] == [s.mean for s in scores[:4]]


def test_spiral_eval_prints_the_table(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    folder = export_untrained(tmp_path / "agent", "mnist-recon")
    spiral = shutil.which("spiral", path=os.path.dirname(sys.executable))
    result = subprocess.run([spiral, "eval", "--agent", str(folder), "--images", "2", "--bank", "3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows] == ["| painter", "| agent (sampled)", "| agent (greedy)",
                                                      "| blank canvas", "| random policy",
                                                      "| greedy search (3 strokes)"]
