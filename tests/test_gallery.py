"""The gallery: grids of paintings and replays, as the results page and README show them."""

import numpy as np
import pytest
from PIL import Image

from envs import PaintConfig, Program
from spiral.agent import untrained_agent
from spiral.gallery import GAP, TILE, write_gallery

CONFIG = PaintConfig(canvas_size=32, grid_size=8, episode_length=4, use_color=False, use_pressure=False,
                     use_size=False, use_flag=False, background=(0, 0, 0), fixed_color=(255, 255, 255))


def side(tiles: int) -> int:
    return tiles * (TILE + GAP) + GAP


def test_conditional_grid_shows_targets_over_paintings_and_the_replay(tmp_path):
    agent = untrained_agent(CONFIG, conditional=True)
    targets = np.zeros((5, 32, 32, 3), np.uint8)
    targets[:, 8:24, 14:18] = 255  # a bar, which the top row must show
    paths = write_gallery(agent, tmp_path, targets, count=5, scale=2.0)
    grid = np.asarray(Image.open(paths["grid"]).convert("RGB"))
    assert grid.shape == (side(2), side(5), 3)
    target_tile = grid[GAP:GAP + TILE, GAP:GAP + TILE]
    assert np.array_equal(target_tile, np.asarray(Image.fromarray(targets[0]).resize((TILE, TILE), Image.Resampling.NEAREST)))
    painting_tile = grid[2 * GAP + TILE:2 * GAP + 2 * TILE, GAP:GAP + TILE]
    assert painting_tile.max() > 0  # without a flag every stroke paints
    replay = Image.open(paths["replay gif"])
    assert replay.n_frames == CONFIG.episode_length + 1 and replay.size == (64, 64)
    assert len(Program.load(paths["replay json"]).strokes) == CONFIG.episode_length
    assert np.array_equal(np.asarray(Image.open(paths["replay target"]).convert("RGB")), targets[0])


def test_unconditional_grid_has_rows_of_samples(tmp_path):
    agent = untrained_agent(CONFIG, conditional=False)
    paths = write_gallery(agent, tmp_path, count=10, scale=1.0)
    assert Image.open(paths["grid"]).size == (side(8), side(2))
    assert "replay target" not in paths


def test_a_conditional_agent_without_enough_targets_is_refused(tmp_path):
    agent = untrained_agent(CONFIG, conditional=True)
    with pytest.raises(ValueError, match="needs 3 targets, got 1"):
        write_gallery(agent, tmp_path, np.zeros((1, 32, 32, 3), np.uint8), count=3)
