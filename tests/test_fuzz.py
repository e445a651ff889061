"""Property-based fuzzing: thousands of random strokes on random configurations never crash."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs import InvalidActionError, PaintEnv, available_brushes

BRUSHES = available_brushes()

configs = st.fixed_dictionaries(
    {
        "canvas_size": st.tuples(st.integers(1, 80), st.integers(1, 80)),
        "grid_size": st.integers(1, 12),
        "render_scale": st.integers(1, 2),
        "episode_length": st.integers(1, 12),
        "brush": st.sampled_from(BRUSHES),
        "use_color": st.booleans(),
        "use_pressure": st.booleans(),
        "use_size": st.booleans(),
        "background": st.tuples(*[st.integers(0, 255)] * 3),
    }
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, seed=st.integers(0, 2**16))
def test_random_episodes_never_crash_and_stay_in_range(config, seed):
    env = PaintEnv(**config)
    observation, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    terminated = False
    while not terminated:
        observation, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(observation)
        assert observation["canvas"].dtype == np.uint8 and reward == 0.0 and not truncated
    assert len(env.program.strokes) == config["episode_length"]
    env.close()


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.integers(-2000, 2000), st.floats(allow_nan=True)), min_size=0, max_size=10))
def test_arbitrary_vectors_are_either_valid_strokes_or_refused_cleanly(values):
    env = PaintEnv(canvas_size=16, grid_size=4)
    env.reset(seed=0)
    try:
        observation, *_ = env.step(np.array(values))
    except InvalidActionError:
        return
    assert env.observation_space.contains(observation)
