"""PaintEnv as gymnasium sees it: spaces, registration, seeding, episodes, rewards, targets."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import PaintConfig, PaintEnv, Program, Stroke, available_brushes
from envs.color_fit import refit_colors
from tests.conftest import action, cell

DIGITS = np.random.default_rng(0).integers(0, 256, (6, 64, 64), dtype=np.uint8)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"canvas_size": (48, 80), "grid_size": 8},
        {"render_scale": 2, "use_color": False, "use_pressure": False, "use_size": False},
        {"brush": "classic/pen", "background": (0, 0, 0), "fixed_color": (255, 255, 255)},
    ],
)
def test_check_env_passes(settings):
    check_env(gym.make(envs.ENV_ID, render_mode="rgb_array", **settings).unwrapped, skip_render_check=False)
    conditional = PaintEnv(target_source=np.zeros((2, *PaintConfig(**settings).canvas_size), np.uint8), **settings)
    check_env(conditional, skip_render_check=True)


def test_registered_with_gymnasium():
    env = gym.make(envs.ENV_ID, canvas_size=32, grid_size=4, episode_length=3)
    observation, _ = env.reset(seed=1)
    assert observation["canvas"].shape == (32, 32, 3)
    assert env.action_space.nvec.tolist() == [2, 16, 16, 6, 10, 20, 20, 20]
    env.close()


def test_action_space_drops_components_it_is_told_to():
    env = PaintEnv(use_color=False, use_pressure=False, grid_size=16)
    assert env.codec.names == ("flag", "end", "control", "size")
    assert env.action_space.nvec.tolist() == [2, 256, 256, 6]


def test_without_a_flag_every_stroke_paints():
    env = PaintEnv(use_flag=False, use_size=False, use_color=False, use_pressure=False, grid_size=16,
                   background=(0, 0, 0), fixed_color=(255, 255, 255))
    assert env.codec.names == ("end", "control")
    env.reset(seed=0)
    for seed in range(5):
        env.action_space.seed(seed)
        observation, _, _, _, info = env.step(env.action_space.sample())
        assert info["stroke"].pen_down
    assert observation["canvas"].max() > 0
    check_env(env, skip_render_check=True)


@pytest.mark.parametrize("settings", [{}, {"canvas_size": (48, 80), "grid_size": 8, "use_color": False},
                                      {"use_flag": False, "use_size": False, "use_pressure": False}])
def test_encode_turns_every_stroke_back_into_its_action(settings):
    codec = envs.ActionCodec(PaintConfig(**settings))
    codec.space.seed(0)
    pens = np.random.default_rng(0).uniform(0, 48, (200, 2))
    for pen in pens:
        action = codec.space.sample()
        assert np.array_equal(codec.encode(codec.decode(action, tuple(pen))), action)


def test_encode_refuses_a_stroke_the_action_space_cannot_make():
    codec = envs.ActionCodec(PaintConfig(grid_size=8, use_color=False))
    stroke = codec.decode(np.array([1, 9, 9, 2, 3]), (0.0, 0.0))
    for change, message in [({"end": (9.0, 9.0)}, "end point"), ({"control": (-4.0, 4.0)}, "control point"),
                            ({"size": 2.5}, "size 2.5"), ({"pressure": 0.15}, "pressure 0.15"),
                            ({"color": (1.0, 0.0, 0.0)}, "red 1.0 is not this action space's fixed")]:
        with pytest.raises(envs.InvalidActionError, match=message):
            codec.encode(dataclasses.replace(stroke, **change))
    with pytest.raises(envs.InvalidActionError, match="pen flag"):
        envs.ActionCodec(PaintConfig(use_flag=False)).encode(dataclasses.replace(stroke, pen_down=False))


def test_observation_holds_canvas_step_and_previous_action(env):
    observation, info = env.reset(seed=0)
    assert set(observation) == {"canvas", "step", "prev_action"} and info == {}
    assert (observation["canvas"] == 255).all() and observation["step"][0] == 0
    move = action(env, flag=0, end=cell(env, 3, 4))
    observation, reward, terminated, truncated, info = env.step(move)
    assert observation["step"][0] == pytest.approx(1 / 20)
    assert observation["prev_action"].tolist() == move.tolist()
    assert reward == 0.0 and not terminated and not truncated
    assert isinstance(info["stroke"], Stroke) and info["step"] == 1


def test_episode_terminates_after_episode_length_and_then_refuses_steps():
    env = PaintEnv(episode_length=3)
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[2] for _ in range(3)]
    assert flags == [False, False, True]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(env.action_space.sample())
    assert len(env.program.strokes) == 3


def test_same_seed_and_actions_reproduce_the_episode_exactly():
    def play(seed):
        env = PaintEnv(target_source=DIGITS, episode_length=8)
        observation, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        canvases = [observation["canvas"]]
        for _ in range(8):
            canvases.append(env.step(env.action_space.sample())[0]["canvas"])
        return observation["target"], np.stack(canvases)

    target_a, canvases_a = play(7)
    target_b, canvases_b = play(7)
    assert (target_a == target_b).all() and (canvases_a == canvases_b).all()
    assert (canvases_a[-1] != canvases_a[0]).any(), "eight random strokes painted nothing"
    target_c, _ = play(8)
    assert not (target_c == target_a).all()


def test_l2_final_reward_is_minus_the_final_error_and_zero_before():
    env = PaintEnv(target_source=DIGITS, reward="l2-final", episode_length=4)
    env.reset(seed=0)
    env.action_space.seed(0)
    rewards, infos = [], []
    for _ in range(4):
        _, reward, _, _, info = env.step(env.action_space.sample())
        rewards.append(reward)
        infos.append(info)
    assert rewards[:3] == [0.0, 0.0, 0.0]
    expected = np.mean(((env.program.render().astype(float) - env.target) / 255) ** 2)
    assert rewards[3] == pytest.approx(-expected, rel=1e-5)
    assert infos[3]["l2"] == pytest.approx(expected, rel=1e-5)


def test_l2_step_rewards_sum_to_the_total_improvement():
    target = np.zeros((1, 64, 64, 3), np.uint8)
    env = PaintEnv(target_source=target, reward="l2-step", episode_length=6)
    _, info = env.reset(seed=0)
    start = info["l2"]
    assert start == pytest.approx(1.0)  # white canvas, black target
    env.action_space.seed(3)
    rewards = []
    for _ in range(6):
        _, reward, _, _, info = env.step(env.action_space.sample())
        rewards.append(reward)
    assert sum(rewards) == pytest.approx(start - info["l2"], abs=1e-6)


def test_reset_option_paints_a_given_target_and_greyscale_or_float_targets_are_accepted():
    env = PaintEnv(target_source=DIGITS)
    image = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    observation, info = env.reset(options={"target": image})
    assert observation["target"].shape == (64, 64, 3)
    assert (observation["target"][..., 0] == np.round(image * 255)).all()
    assert info["l2"] > 0


def test_target_sampler_function_is_called_with_the_env_rng():
    seen = []

    def sampler(rng):
        seen.append(rng)
        return np.full((64, 64, 3), 128, np.uint8)

    env = PaintEnv(target_source=sampler)
    observation, _ = env.reset(seed=0)
    assert seen == [env.np_random] and (observation["target"] == 128).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_source": np.zeros((2, 32, 32), np.uint8)}, r"needs \(64, 64, 3\)"),
        ({"target_source": np.zeros((64, 64), np.uint8)}, "array of images"),
        ({"target_source": np.full((2, 64, 64), 3.0)}, "uint8 or floats in"),
        ({"reward": "l2-final"}, "pass a target_source"),
        ({"reward": "sparkles"}, "reward must be one of"),
        ({"canvas_size": 0}, "canvas_size"),
        ({"grid_size": 0}, "grid_size"),
        ({"color_levels": 1}, "color_levels"),
        ({"brush": "classic/no_such_brush"}, "Unknown brush"),
        ({"render_mode": "human"}, "render_mode"),
        ({"colour": True}, "Unknown PaintConfig setting"),
        ({"fit_color": True}, "fit_color takes each stroke's colour from the target"),
        ({"fit_color": True, "use_color": False, "target_source": np.zeros((1, 64, 64), np.uint8)},
         "fit_color chooses among the colour levels"),
        ({"fit_color": 1}, "fit_color must be true or false"),
    ],
)
def test_bad_configuration_is_refused_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PaintEnv(**kwargs)


def test_spirals_soft_and_felt_pens_paint_the_pens_lines_with_softer_edges():
    """spiral's own brushes resolve by name like the collection's. soft_pen differs from classic/pen by its edge
    only; felt_pen's line is wider, with a soft edge, and about as bright at its middle; felt_pen_wide's wider still."""
    brushes = ("classic/pen", "spiral/soft_pen", "spiral/felt_pen", "spiral/felt_pen_wide")
    assert set(brushes) <= set(available_brushes())
    canvases = {}
    for brush in brushes:
        env = PaintEnv(canvas_size=64, grid_size=32, brush=brush, background=(0, 0, 0), fixed_color=(255, 255, 255),
                       use_color=False, use_pressure=False, episode_length=3)
        env.reset(seed=0)
        for action in ([1, 5 * 32 + 5, 20 * 32 + 25, 1], [1, 30 * 32 + 3, 3 * 32 + 16, 2], [1, 16 * 32 + 16, 0, 0]):
            observation, *_ = env.step(np.array(action))
        canvases[brush] = observation["canvas"][..., 0].astype(np.int64)
        env.close()
    pen, soft = canvases["classic/pen"], canvases["spiral/soft_pen"]
    assert abs(soft.sum() - pen.sum()) < 0.05 * pen.sum()  # about the same ink...
    assert ((soft > 0) & (soft < 255)).sum() > 1.2 * ((pen > 0) & (pen < 255)).sum()  # ...spread over a wider edge
    assert (soft == 255).sum() < (pen == 255).sum()
    felt = canvases["spiral/felt_pen"]
    assert (felt > 0).sum() > 1.3 * (pen > 0).sum() and 1.0 < felt.sum() / pen.sum() < 1.25  # wider, a little more ink
    assert ((felt > 0) & (felt < 255)).sum() > 2 * ((pen > 0) & (pen < 255)).sum() and felt.max() == 255
    wide = canvases["spiral/felt_pen_wide"]
    assert (wide > 0).sum() > 1.05 * (felt > 0).sum() and wide.sum() > 1.1 * felt.sum() and wide.max() == 255


def test_target_option_needs_a_conditional_env(env):
    with pytest.raises(ValueError, match="conditional"):
        env.reset(options={"target": np.zeros((64, 64), np.uint8)})
    with pytest.raises(ValueError, match="Unknown reset option"):
        env.reset(options={"targte": 1})


def test_render_returns_the_high_resolution_canvas():
    env = PaintEnv(render_mode="rgb_array", render_scale=4, canvas_size=32)
    env.reset(seed=0)
    env.step(action(env, flag=1, end=cell(env, 30, 30), control=cell(env, 1, 30), size=3))
    picture = env.render()
    assert picture.shape == (128, 128, 3) and (picture != 255).any()


def test_config_round_trips_through_plain_json_types():
    config = PaintConfig(canvas_size=(40, 50), brush_sizes=(1, 3), fixed_color=(1, 2, 3))
    assert PaintConfig.from_dict(config.to_dict()) == config
    assert PaintEnv(config.to_dict()).config == config


def test_program_records_what_the_env_painted(env):
    env.action_space.seed(0)
    for _ in range(20):
        env.step(env.action_space.sample())
    assert isinstance(env.program, Program) and len(env.program.strokes) == 20
    assert env.program.strokes[1].start == env.program.strokes[0].end


def test_fit_color_paints_each_stroke_in_the_colour_of_least_error_and_records_it():
    """The fitted colour beats every other colour the action could have chosen for the same footprint, and the
    recorded action, the observation's prev_action and the program carry it: the program replays exactly."""
    rng = np.random.default_rng(0)
    target = np.zeros((64, 64, 3), np.uint8)
    target[:, :32] = (200, 40, 90)  # two flat colours and some noise: a stroke across both is a compromise
    target[:, 32:] = (20, 160, 230)
    target = np.clip(target + rng.integers(-20, 21, target.shape), 0, 255).astype(np.uint8)
    settings = {"brush": "classic/pen", "use_pressure": False, "grid_size": 8}
    fitted = PaintEnv(target_source=target[None], fit_color=True, render_mode="rgb_array", **settings)
    plain = PaintEnv(target_source=target[None], **settings)
    try:
        fitted.reset(seed=0)
        strokes = [action(fitted, flag=1, end=cell(fitted, 2, 1), control=cell(fitted, 2, 6), size=4),
                   action(fitted, flag=0, end=cell(fitted, 6, 1)),
                   action(fitted, flag=1, end=cell(fitted, 6, 6), control=cell(fitted, 5, 3), size=2)]
        before = [stroke.copy() for stroke in strokes]
        painted = []
        for step, chosen in enumerate(strokes):
            observation, _, _, _, info = fitted.step(chosen)
            np.testing.assert_array_equal(chosen, before[step])  # the caller's array is left alone
            np.testing.assert_array_equal(observation["prev_action"], info["action"])
            painted.append(info["action"])
            error = info["l2"]
            # The same stroke in other colours, on the same canvas, paints no nearer the target.
            channels = [fitted.codec.index[channel] for channel in ("red", "green", "blue")]
            if chosen[fitted.codec.index["flag"]] == 0:
                np.testing.assert_array_equal(info["action"], chosen)  # a move paints nothing: nothing to fit
                continue
            assert not np.array_equal(info["action"][channels], chosen[channels])  # black was not the best colour
            others = [info["action"][channels]] + [rng.integers(0, 20, 3) for _ in range(12)]
            for offset in ((1, 0, 0), (0, -1, 0), (0, 0, 1)):
                others.append(np.clip(info["action"][channels] + offset, 0, 19))
            for colour in others:
                plain.reset(seed=0, options={"target": target})
                for earlier in painted[:-1]:
                    plain.step(earlier)
                trial = info["action"].copy()
                trial[channels] = colour
                assert plain.step(trial)[4]["l2"] >= error - 1e-12, f"colour {colour} beats the fit at step {step}"
        np.testing.assert_array_equal(fitted.program.render(), fitted.render())
        assert [stroke.color for stroke in fitted.program.strokes] == \
            [fitted.codec.stroke(a, (0, 0)).color for a in painted]
        # Same target and actions, same painting (the fit starts each episode afresh).
        first = observation["canvas"]
        fitted.reset(seed=0)
        for chosen in strokes:
            observation = fitted.step(chosen)[0]
        np.testing.assert_array_equal(observation["canvas"], first)
    finally:
        fitted.close()
        plain.close()


def test_refit_colors_rechooses_every_colour_jointly_for_the_finished_canvas():
    """A wide stroke's colour, fitted greedily for the whole canvas, is a compromise between the two halves that the
    later strokes paint over; refitted for what stays visible of it, the painting comes nearer the target, keeps
    its strokes, and no single stroke's colour one level off in any channel does better (real renders)."""
    rng = np.random.default_rng(1)
    target = np.zeros((64, 64, 3), np.uint8)
    target[:, :32], target[:, 32:], target[20:44, 20:44] = (200, 40, 90), (20, 160, 230), (240, 230, 40)
    target = np.clip(target + rng.integers(-20, 21, target.shape), 0, 255).astype(np.uint8)
    env = PaintEnv(target_source=target[None], fit_color=True, brush="classic/pen", use_pressure=False, grid_size=8,
                   brush_sizes=(4, 12, 40), render_mode="rgb_array")
    try:
        env.reset(seed=0)
        for chosen in (action(env, flag=1, end=cell(env, 7, 7), control=cell(env, 0, 7), size=2),  # the whole canvas
                       action(env, flag=0, end=cell(env, 0, 1)),
                       action(env, flag=1, end=cell(env, 7, 1), control=cell(env, 4, 0), size=1),  # the left half
                       action(env, flag=1, end=cell(env, 4, 4), control=cell(env, 3, 3), size=1)):  # the middle
            env.step(chosen)
        program, greedy_error = env.program, env.l2()
        refit = refit_colors(program, env.target, env.config)
        error = float(envs.mse(refit.render(), env.target))
        assert error < 0.8 * greedy_error
        assert [dataclasses.replace(stroke, color=(0, 0, 0)) for stroke in refit.strokes] == \
            [dataclasses.replace(stroke, color=(0, 0, 0)) for stroke in program.strokes]
        assert refit.strokes[1] == program.strokes[1]  # a pen-up move has no colour to fit
        channels = [env.codec.index[channel] for channel in ("red", "green", "blue")]
        for i, stroke in enumerate(refit.strokes):
            if not stroke.pen_down:
                continue
            levels = env.codec.encode(stroke)  # each colour is one of the action space's levels
            for channel in channels:
                for offset in (-1, 1):
                    moved = levels.copy()
                    moved[channel] = np.clip(moved[channel] + offset, 0, env.config.color_levels - 1)
                    strokes = list(refit.strokes)
                    strokes[i] = env.codec.stroke(moved, stroke.start)
                    assert envs.mse(dataclasses.replace(refit, strokes=strokes).render(), env.target) >= error - 1e-12
        moves = dataclasses.replace(program, strokes=[program.strokes[1]])
        assert refit_colors(moves, env.target, env.config) == moves  # nothing painted, nothing to refit
        with pytest.raises(ValueError, match="needs use_color = true"):
            refit_colors(program, env.target, dataclasses.replace(env.config, use_color=False, fit_color=False))
    finally:
        env.close()


@pytest.mark.parametrize(("settings", "exact"), [
    ({"brush": "classic/pen", "grid_size": 8}, True),  # with pen-up moves among the actions
    ({"fit_color": True, "brush": "classic/pen", "use_pressure": False, "grid_size": 8}, True),  # colours fitted
    ({"grid_size": 8}, False),  # the default brush, classic/dry_brush, whose dabs jitter at random
])
def test_l2_after_is_the_error_a_step_would_leave_and_leaves_the_episode_as_it_was(settings, exact):
    """The lookahead of a painter that checks strokes before it paints one: each tried stroke's predicted error is
    what stepping it gives (for a jittery brush, near it), and an episode with lookaheads paints
    exactly what one without them paints."""
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, (64, 64, 3), np.uint8)
    looking, plain = (PaintEnv(target_source=target[None], render_mode="rgb_array", **settings) for _ in range(2))
    try:
        looking.reset(seed=0)
        plain.reset(seed=0)
        looking.action_space.seed(0)
        moves = 0
        for _ in range(looking.config.episode_length):
            tried = [looking.action_space.sample() for _ in range(4)]
            predicted = [looking.l2_after(action) for action in tried]
            pick = int(rng.integers(len(tried)))
            observation, _, _, _, info = looking.step(tried[pick])
            assert info["l2"] == (predicted[pick] if exact else pytest.approx(predicted[pick], rel=0.2))
            moves += tried[pick][looking.codec.index["flag"]] == 0
            expected = plain.step(tried[pick])[0]
            for key in expected:
                np.testing.assert_array_equal(observation[key], expected[key])
        assert moves > 0  # a pen-up move's lookahead (the canvas as it is) was checked too
        np.testing.assert_array_equal(looking.render(), plain.render())
        assert looking.program.to_json() == plain.program.to_json()
        np.testing.assert_array_equal(looking.program.render(), looking.render())
        with pytest.raises(RuntimeError, match="The episode ended after"):
            looking.l2_after(tried[0])
    finally:
        looking.close()
        plain.close()
    unconditional = PaintEnv()
    unconditional.reset(seed=0)
    with pytest.raises(RuntimeError, match="l2_after\\(\\) compares with a target"):
        unconditional.l2_after(unconditional.action_space.sample())
    unconditional.close()
