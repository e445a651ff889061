"""Evaluation metrics on cases whose answer is known, and the baselines' order on MNIST."""

import numpy as np
import pytest
import torch

from envs import PaintConfig, PaintEnv, Painter, Stroke, mse
from spiral.agent import untrained_agent
from spiral.evaluation import blank_score, evaluate, random_score, search_score
from spiral.cli import main
from spiral.experiment import DataSettings, Experiment
from spiral.network_config import NetworkConfig
from spiral.rewards import squared_errors
from tests.conftest import export_untrained


def test_identical_images_score_zero_and_opposites_one():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert mse(image, image) == 0.0
    assert mse(np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)) == 1.0
    batch = np.stack([np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 51, np.uint8)])
    assert mse(batch, np.zeros_like(batch)).tolist() == [0.0, pytest.approx(0.04)]  # one error per image


def test_the_env_evaluation_and_the_learner_measure_the_same_l2():
    """eval/blank_l2 (evaluation), eval/test_l2 and final_l2 (the env's info) and the learner's L2 reward agree."""
    config = PaintConfig(canvas_size=16, grid_size=4, episode_length=4, background=(0, 0, 0),
                         fixed_color=(255, 255, 255), use_color=False)
    target = np.zeros((16, 16, 3), np.uint8)
    target[2:9, 3:12] = (200, 120, 40)
    env = PaintEnv(config, target_source=target[None])
    blank, info = env.reset(seed=0)
    env.action_space.seed(0)  # the random policy of random_score, replayed here
    canvases, l2s = [blank["canvas"]], [info["l2"]]
    for _ in range(config.episode_length):
        observation, _, _, _, info = env.step(env.action_space.sample())
        canvases.append(observation["canvas"])
        l2s.append(info["l2"])
    assert len(set(l2s)) > 1, "the random strokes should change the canvas"
    assert blank_score(config, target[None]).mean == l2s[0]
    assert random_score(config, target[None]).mean == l2s[-1]
    batch = torch.from_numpy(np.stack(canvases))[None]
    learner = squared_errors(batch, torch.from_numpy(target).expand_as(batch))
    assert learner.shape == (1, config.episode_length + 1)
    assert learner[0].tolist() == pytest.approx(l2s, rel=1e-6)  # float32 on the learner


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
                                        "greedy search (5 strokes)", "teacher search (30 aimed strokes, 4 climbs)"]
    assert all(0 <= s.mean <= 1 and s.seconds_per_image >= 0 for s in scores)
    assert [s.mean for s in evaluate(agent, targets[:2], bank=0)] == [s.mean for s in scores[:4]]


def test_spiral_eval_prints_the_table(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    folder = export_untrained(tmp_path / "agent", "mnist-recon")
    spiral = shutil.which("spiral", path=os.path.dirname(sys.executable))
    result = subprocess.run([spiral, "eval", "--agent", str(folder), "--images", "2", "--bank", "3",
                             "--proposals", "3", "--refine", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows] == ["| painter", "| agent (sampled)", "| agent (greedy)",
                                                      "| agent (greedy, best of 3 proposals a stroke, refined 2 rounds)",
                                                      "| blank canvas", "| random policy",
                                                      "| greedy search (3 strokes)",
                                                      "| teacher search (30 aimed strokes, 4 climbs)"]


def test_spiral_eval_validation_paints_the_images_training_keeps_out(tmp_path, capsys):
    folder = export_untrained(tmp_path / "agent", "mnist-recon")
    main(["eval", "--agent", str(folder), "--images", "3", "--bank", "0", "--validation"])
    out = capsys.readouterr().out
    assert out.startswith("3 validation images of mnist (the training split's last")
    experiment = Experiment.from_preset("mnist-recon")
    validation = experiment.images("validation")[:3]  # what a run chooses its best/ export on
    def blank_row(targets):  # without the time column, which varies
        return blank_score(experiment.paint_config(), targets).row().rsplit(" | ", 1)[0]

    assert blank_row(validation) in out and blank_row(experiment.images("test")[:3]) not in out
    with pytest.raises(SystemExit, match="--images can be at most 100, not 101"):
        main(["eval", "--agent", str(folder), "--images", "101", "--bank", "0", "--validation"])
    with pytest.raises(SystemExit, match="its validation images are fixed"):
        main(["eval", "--agent", str(folder), "--images", "3", "--bank", "0", "--validation", "--seed-set", "2"])
    with pytest.raises(SystemExit, match="reconstructs given images .*--samples is for the other kind"):
        main(["eval", "--agent", str(folder), "--samples", "3", "--validation"])
    small = export_untrained(tmp_path / "small", "mnist-recon", data=DataSettings(limit=64))
    with pytest.raises(SystemExit, match="mnist has no validation images: its training split has 64 images"):
        main(["eval", "--agent", str(small), "--images", "3", "--bank", "0", "--validation"])
