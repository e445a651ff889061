"""What a stroke paints, checked pixel by pixel on the real libmypaint canvas."""

import numpy as np
import pytest

from envs import PaintEnv, Program, Stroke
from tests.conftest import action, cell, changed_mask


def bezier_box(stroke: Stroke, margin: float) -> tuple[float, float, float, float]:
    points = stroke.points(200)
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return x0 - margin, y0 - margin, x1 + margin, y1 + margin


# How far from the curve paint may land, in brush radii: the pen grows with pressure (x e^0.5)
# and starts with a blob; the dry brush scatters dabs by 1.4 radii times a Gaussian.
@pytest.mark.parametrize(("brush", "reach_95", "reach_all"), [("classic/pen", 2.5, 2.5), ("classic/dry_brush", 3.5, 6)])
@pytest.mark.parametrize("seed", range(4))
def test_a_stroke_paints_along_its_bezier_and_nowhere_else(brush, reach_95, reach_all, seed):
    rng = np.random.default_rng(seed)
    env = PaintEnv(brush=brush, grid_size=16)
    env.reset(seed=seed)
    start, end, control = (int(c) for c in rng.integers(0, 256, 3))
    before = env.step(action(env, flag=0, end=start))[0]["canvas"]
    after, _, _, _, info = env.step(action(env, flag=1, end=end, control=control, size=1, pressure=9))
    stroke = info["stroke"]
    ys, xs = np.nonzero(changed_mask(before, after["canvas"]))
    assert len(xs) > 0, "a pen-down stroke painted nothing"
    reach = reach_95 * stroke.size + 1.5
    x0, y0, x1, y1 = bezier_box(stroke, margin=reach_all * stroke.size + 1.5)
    assert xs.min() >= x0 and xs.max() + 1 <= x1 and ys.min() >= y0 and ys.max() + 1 <= y1
    curve = stroke.points(200)
    centres = np.stack([xs + 0.5, ys + 0.5], axis=1)
    distance = np.linalg.norm(centres[:, None] - curve[None], axis=-1).min(axis=1)
    assert np.quantile(distance, 0.95) <= reach, "paint strays from the curve"
    for px, py in (stroke.start, stroke.end):
        assert np.hypot(xs + 0.5 - px, ys + 0.5 - py).min() <= reach, f"nothing painted near ({px}, {py})"


def test_a_pen_up_move_paints_nothing_and_the_next_stroke_starts_there(env):
    blank = env._canvas.copy()
    target = cell(env, 5, 27)
    observation, _, _, _, info = env.step(action(env, flag=0, end=target, control=cell(env, 30, 0), size=5))
    assert (observation["canvas"] == blank).all()
    assert not info["stroke"].pen_down
    _, _, _, _, info = env.step(action(env, flag=1, end=cell(env, 20, 20), control=cell(env, 10, 10), size=2))
    assert info["stroke"].start == env.codec.cell_center(target) == (27.5 * 2, 5.5 * 2)


def test_a_pure_red_stroke_is_red():
    env = PaintEnv(brush="classic/pen")
    env.reset(seed=0)
    observation = env.step(action(env, flag=1, end=cell(env, 16, 28), control=cell(env, 16, 16), size=3,
                                  pressure=9, red=19, green=0, blue=0))[0]
    canvas = observation["canvas"].astype(int)
    painted = canvas[changed_mask(np.full_like(canvas, 255), canvas)]
    assert len(painted) > 50
    # Every painted pixel is red over white: full red, equal green and blue; the core is pure red.
    assert (painted[:, 0] >= 254).all() and (np.abs(painted[:, 1] - painted[:, 2]) <= 1).all()
    assert (painted[:, 1:] <= 2).all(axis=1).sum() > 20


@pytest.mark.parametrize("brush", ["classic/pen", "classic/dry_brush"])
def test_brush_size_widens_the_stroke_monotonically(brush):
    painted = []
    for size in range(6):
        env = PaintEnv(brush=brush)
        env.reset(seed=0)
        env.step(action(env, flag=0, end=cell(env, 16, 4)))
        observation = env.step(action(env, flag=1, end=cell(env, 16, 27), control=cell(env, 16, 16),
                                      size=size, pressure=9))[0]
        painted.append(int(changed_mask(np.full((64, 64, 3), 255), observation["canvas"]).sum()))
    assert painted == sorted(painted) and painted[0] < painted[-1], painted


def test_replaying_the_json_program_reproduces_the_canvas_bit_for_bit():
    env = PaintEnv(episode_length=20, canvas_size=(64, 96))
    env.reset(seed=5)
    env.action_space.seed(5)
    canvases = [env._canvas.copy()]
    for _ in range(20):
        canvases.append(env.step(env.action_space.sample())[0]["canvas"])
    replayed = Program.from_json(env.program.to_json())
    assert replayed == env.program
    frames = list(replayed.frames())
    assert len(frames) == 21
    for original, frame in zip(canvases, frames):
        assert (original == frame).all()
    assert (replayed.render() == canvases[-1]).all()


def paint_random_episode(brush: str, seed: int, steps: int = 12) -> PaintEnv:
    env = PaintEnv(brush=brush, episode_length=steps)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(steps):
        env.step(env.action_space.sample())
    return env


def block_mean(image: np.ndarray, block: int) -> np.ndarray:
    height, width, channels = image.shape
    return image.reshape(height // block, block, width // block, block, channels).mean(axis=(1, 3))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("brush", "block", "tolerance", "correlation"),
    [
        ("classic/pen", 1, 0.03, 0.85),  # smooth brushes match pixel for pixel, up to antialiasing
        ("classic/pencil", 1, 0.03, 0.85),
        # Dry brush scatters big dabs at random: the picture matches in 8x8 blocks, not per pixel.
        ("classic/dry_brush", 8, 0.1, 0.7),
    ],
)
def test_rendering_at_4x_matches_the_canvas_after_downsampling(brush, block, tolerance, correlation, seed):
    env = paint_random_episode(brush, seed)
    canvas = env._canvas.astype(np.float32)
    large = env.program.render(scale=4).astype(np.float32)
    assert large.shape == (256, 256, 3)
    small, downsampled = block_mean(canvas, block), block_mean(block_mean(large, 4), block)
    assert np.abs(downsampled - small).mean() / 255 < tolerance
    assert np.corrcoef(downsampled.ravel(), small.ravel())[0, 1] > correlation


def test_internal_render_scale_shows_the_agent_a_downsample():
    env = PaintEnv(render_scale=4, canvas_size=32, grid_size=8, render_mode="rgb_array")
    env.reset(seed=0)
    observation = env.step(action(env, flag=1, end=cell(env, 6, 6), control=cell(env, 1, 6), size=3))[0]
    expected = env.render().astype(np.float32).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
    assert np.abs(observation["canvas"] - expected).max() <= 0.5 + 1e-4


@pytest.mark.parametrize("size", [(37, 100), (65, 65), (130, 70)])
def test_canvases_that_are_not_multiples_of_64_paint_into_their_far_corner(size):
    height, width = size
    env = PaintEnv(canvas_size=size, grid_size=8, brush="classic/pen")
    env.reset(seed=0)
    env.step(action(env, flag=0, end=cell(env, 7, 5)))
    observation = env.step(action(env, flag=1, end=cell(env, 7, 7), control=cell(env, 7, 6), size=2, pressure=9))[0]
    canvas = observation["canvas"]
    assert canvas.shape == (height, width, 3)
    ys, xs = np.nonzero(changed_mask(np.full_like(canvas, 255), canvas))
    assert xs.max() >= width * 7 / 8 and ys.max() >= height * 7 / 8


def test_svg_export_has_one_path_per_painted_stroke():
    import xml.etree.ElementTree as ElementTree

    env = PaintEnv(episode_length=10)
    env.reset(seed=1)
    env.action_space.seed(1)
    for _ in range(10):
        env.step(env.action_space.sample())
    root = ElementTree.fromstring(env.program.to_svg(scale=4))
    paths = root.findall("{http://www.w3.org/2000/svg}path")
    assert len(paths) == sum(stroke.pen_down for stroke in env.program.strokes)
    assert root.get("width") == "256" and root.get("viewBox") == "0 0 64 64"
    assert all(path.get("d").startswith("M ") and " Q " in path.get("d") for path in paths)
