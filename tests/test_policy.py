"""The SPIRAL policy network and its RLlib module: shapes, autoregression, teacher forcing."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

import spiral.policy
from envs import PaintEnv
from spiral.network_config import NetworkConfig
from spiral.policy import PolicyNetwork
from spiral.rllib.module import SpiralPolicyModule

TINY = NetworkConfig(input_size=16, channels=8, res_blocks=1, hidden=32, embedding=8)


def network(env: PaintEnv, config: NetworkConfig = TINY) -> PolicyNetwork:
    torch.manual_seed(0)
    return PolicyNetwork(env.codec.names, tuple(env.codec.nvec.tolist()), env.config.grid_size, env.conditional, config)


def observations(env: PaintEnv, batch: int, steps: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Real observations from random episodes, stacked to (batch, steps, ...)."""
    rows = []
    env.action_space.seed(seed)
    for b in range(batch):
        observation, _ = env.reset(seed=seed + b)
        row = [observation]
        for _ in range(steps - 1):
            row.append(env.step(env.action_space.sample())[0])
        rows.append(row)
    return {key: torch.as_tensor(np.stack([[o[key] for o in row] for row in rows])) for key in rows[0][0]}


@pytest.fixture
def conditional_env():
    return PaintEnv(canvas_size=32, grid_size=8, episode_length=6, target_source=np.zeros((3, 32, 32), np.uint8))


def test_teacher_forced_log_probs_equal_the_sampled_ones(conditional_env):
    net = network(conditional_env)
    obs = observations(conditional_env, batch=3, steps=5)
    features, _ = net.features(obs, net.initial_state(3))
    actions, logp, logits = net.sample(features)
    forced = net.teacher_forced_logits(features, actions)
    assert torch.allclose(forced, logits, atol=1e-6)
    assert torch.allclose(net.log_prob(forced, actions), logp, atol=1e-5)
    assert actions.shape == (3, 5, len(conditional_env.codec.names))
    assert ((actions >= 0) & (actions < torch.as_tensor(conditional_env.codec.nvec))).all()


def test_the_fine_path_and_pen_map_keep_teacher_forcing_exact(conditional_env):
    net = network(conditional_env, NetworkConfig(input_size=16, channels=8, res_blocks=1, hidden=32, embedding=8,
                                                 fine_channels=4, pen_map=True))
    obs = observations(conditional_env, batch=2, steps=4)
    features, _ = net.features(obs, net.initial_state(2))
    actions, logp, logits = net.sample(features)
    assert torch.allclose(net.teacher_forced_logits(features, actions), logits, atol=1e-6)
    assert torch.allclose(net.log_prob(logits, actions), logp, atol=1e-5)
    # The pen map marks the previous action's end cell, and the canvas centre at the first step.
    grid, end = conditional_env.config.grid_size, conditional_env.codec.index["end"]
    previous, step = obs["prev_action"].reshape(8, -1).long(), obs["step"].reshape(8, 1)
    pen = net._pen_map(previous, step).view(8, 16, 16)
    cells = pen[:, ::2, ::2].reshape(8, -1).argmax(-1)  # grid 8 on a 16 px input: 2 x 2 pixels a cell
    expected = torch.where(step.reshape(-1) == 0, (grid // 2) * grid + grid // 2, previous[:, end])
    assert torch.equal(cells, expected) and torch.equal(pen.sum((1, 2)), torch.full((8,), 4.0))


def test_the_channels_last_heads_give_the_logits_of_the_contiguous_layout(conditional_env, monkeypatch):
    """The heads' memory layout is a matter of speed only (benchmarks/learner_step.py)."""
    net = network(conditional_env, NetworkConfig(input_size=16, channels=8, res_blocks=1, hidden=32, embedding=8,
                                                 fine_channels=4))
    obs = observations(conditional_env, batch=2, steps=4)
    features, _ = net.features(obs, net.initial_state(2))
    actions = net.sample(features)[0]
    assert spiral.policy.CONV_MEMORY_FORMAT == torch.channels_last
    channels_last = net.teacher_forced_logits(features, actions)
    monkeypatch.setattr(spiral.policy, "CONV_MEMORY_FORMAT", torch.contiguous_format)
    assert torch.allclose(net.teacher_forced_logits(features, actions), channels_last, atol=1e-5)


def test_the_fine_maps_last_layer_is_the_convolution_of_both_maps_concatenated():
    """The spatial head's last layer runs as two convolutions summed, one per input (no concatenation)."""
    torch.manual_seed(0)
    head = spiral.policy.SpatialHead(hidden=32, grid=16, channels=8, fine_channels=4)
    z, spatial, fine = torch.randn(3, 32), torch.randn(3, 8, 8, 8), torch.randn(3, 4, 16, 16)
    decoded = head.decode[:-1]((head.project(z).view(3, 8, 8, 8) + spatial))
    concatenated = head.decode[-1](torch.cat([decoded, fine], dim=1)).flatten(1)
    assert torch.allclose(head(z, spatial, fine), concatenated, atol=1e-5)


@pytest.mark.parametrize("size", [64, 48, 20])
def test_the_networks_resizing_is_area_interpolation(size):
    """Pooling where the canvas is a multiple of the input size; torch's area resizing elsewhere."""
    net = PolicyNetwork(("end",), (64,), 8, False, NetworkConfig(input_size=16))
    images = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    expected = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2).float() / 255, size=(16, 16), mode="area")
    assert torch.allclose(net._images(images), expected, atol=1e-6)


@pytest.mark.skipif(not spiral.policy.bfloat16_supported(torch.device("cpu")), reason="this CPU has no bf16 arithmetic")
def test_the_learners_bfloat16_pass_returns_float32_close_to_float32s(conditional_env):
    """training.precision = "bfloat16": the module's training pass runs under autocast and hands on float32
    logits, whose log-probabilities stay within bf16's rounding of the float32 ones."""
    module = SpiralPolicyModule(
        observation_space=conditional_env.observation_space, action_space=conditional_env.action_space,
        model_config={"action_names": list(conditional_env.codec.names), "action_nvec": conditional_env.codec.nvec.tolist(),
                      "grid_size": conditional_env.config.grid_size, "conditional": True,
                      "network": NetworkConfig(fine_channels=4, pen_map=True).to_dict()},
    )
    obs = observations(conditional_env, batch=4, steps=5)
    state = {key: torch.as_tensor(np.stack([value] * 4)) for key, value in module.get_initial_state().items()}
    features, _ = module.net.features(obs, (state["h"], state["c"]))
    actions = module.net.sample(features)[0]
    batch = {Columns.OBS: obs, Columns.STATE_IN: state, Columns.ACTIONS: actions}
    float32 = module._forward_train(batch)
    module.model_config["precision"] = "bfloat16"
    bfloat16 = module._forward_train(batch)
    assert all(value.dtype == torch.float32 for value in (bfloat16[Columns.ACTION_DIST_INPUTS],
                                                          bfloat16[Columns.EMBEDDINGS], *bfloat16[Columns.STATE_OUT].values()))
    logp = [module.net.log_prob(out[Columns.ACTION_DIST_INPUTS], actions) for out in (float32, bfloat16)]
    assert not torch.equal(*logp) and (logp[0] - logp[1]).abs().max() < 0.2


def test_a_precision_the_device_cannot_run_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="precision must be one of"):
        spiral.policy.autocast("float16", torch.device("cpu"))
    # A CPU without AVX-512 BF16 or AMX (this machine may have them: the hardware query answers no).
    monkeypatch.setattr(spiral.policy, "bfloat16_supported", lambda device: False)
    with pytest.raises(ValueError, match="needs bf16 arithmetic, which this cpu lacks"):
        spiral.policy.autocast("bfloat16", torch.device("cpu"))
    with spiral.policy.autocast("float32", torch.device("cpu")):  # float32 needs nothing of the device
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32


def test_proposals_are_drawn_from_the_policy_each_row_from_its_own_stream(conditional_env):
    net = network(conditional_env)
    with torch.no_grad():
        features, _ = net.features(observations(conditional_env, 3, 1), net.initial_state(3))
        streams = lambda seeds: [torch.Generator().manual_seed(seed) for seed in seeds]  # noqa: E731
        proposed = net.propose(features, 5, streams([7, 8, 9]))
        assert proposed.shape == (5, 3, len(conditional_env.codec.names))
        assert ((proposed >= 0) & (proposed < torch.as_tensor(conditional_env.codec.nvec))).all()
        # A row's proposals depend on its features and its stream only, not on the rows beside it.
        assert torch.equal(net.propose(features[1:2], 5, streams([8]))[:, 0], proposed[:, 1])
        # The same distribution as sampling, at any temperature: each head's choices, 4,000 of each.
        draws = 4000
        for temperature in (1.0, 0.5):
            ours = net.propose(features[:1], draws, streams([1]), temperature)[:, 0]
            torch.manual_seed(0)
            theirs = net.sample(features[:1].expand(draws, -1, -1), temperature=temperature)[0][:, 0]
            for head, size in enumerate(net.nvec):
                frequencies = [torch.bincount(actions[:, head], minlength=size) / draws for actions in (ours, theirs)]
                assert 0.5 * (frequencies[0] - frequencies[1]).abs().sum() < 0.08, (temperature, head)


def test_proposals_run_each_spatial_head_once_per_distinct_choice_so_far(conditional_env):
    """propose's copies of an episode read its features, never copied: its spatial heads (the network's costliest
    part) run once for each distinct (episode, choices so far), with what running them on every copy gives."""
    net = network(conditional_env)
    rows, count, heads = 3, 40, len(net.names)
    with torch.no_grad():
        features, _ = net.features(observations(conditional_env, rows, 1), net.initial_state(rows))
        repeated = features.reshape(rows, -1).repeat(count, 1)
        uniforms = torch.rand((count * rows, heads), generator=torch.Generator().manual_seed(0))
        batch_sizes = []
        end_head = net.heads[net.names.index("end")]
        hook = end_head.register_forward_pre_hook(lambda module, inputs: batch_sizes.append(len(inputs[0])))
        shared = net._autoregress(features, None, False, None, 1.0, uniforms, torch.arange(rows).repeat(count))
        hook.remove()
        every_row = net._autoregress(repeated, None, False, None, 1.0, uniforms)
    assert batch_sizes == [len(torch.unique(shared[0][:, :1] + 2 * torch.arange(rows).repeat(count)[:, None]))]
    assert batch_sizes[0] <= 2 * rows  # one run per episode and flag, not per proposal (120 rows)
    assert torch.equal(shared[0], every_row[0])
    torch.testing.assert_close(shared[1], every_row[1])


def test_an_inverse_transform_draw_never_takes_a_choice_of_zero_probability():
    probabilities = torch.tensor([[0.0, 0.5, 0.5, 0.0]] * 3)
    chosen = spiral.policy._draw(probabilities, None, torch.tensor([0.0, 0.5, 1 - 1e-7]))
    assert chosen.tolist() == [1, 2, 2]


def test_later_heads_depend_on_earlier_choices(conditional_env):
    net = network(conditional_env)
    features, _ = net.features(observations(conditional_env, 1, 1), net.initial_state(1))
    actions, _, _ = net.sample(features)
    other = actions.clone()
    other[..., 0] = 1 - other[..., 0]  # flip the flag
    first, second = net.teacher_forced_logits(features, actions), net.teacher_forced_logits(features, other)
    flag_size = net.nvec[0]
    assert torch.equal(first[..., :flag_size], second[..., :flag_size])  # the flag's own head is not affected
    assert not torch.allclose(first[..., flag_size:], second[..., flag_size:])


def test_a_fresh_policy_prefers_to_paint(conditional_env):
    net = network(conditional_env)
    features, _ = net.features(observations(conditional_env, 4, 3), net.initial_state(4))
    probabilities = net.split(net.sample(features)[2])[0].softmax(-1)[..., 1]
    assert (probabilities > 0.75).all()  # the initial bias: training notes, "pen never down"


@pytest.mark.parametrize("grid", [4, 12, 16, 32])
def test_spatial_heads_cover_the_grid(grid):
    env = PaintEnv(canvas_size=32, grid_size=grid, episode_length=2)
    net = network(env)
    features, _ = net.features(observations(env, 2, 1), net.initial_state(2))
    logits = net.split(net.sample(features)[2])
    assert logits[env.codec.index["end"]].shape[-1] == grid * grid


def test_the_lstm_carries_memory_across_calls(conditional_env):
    net = network(conditional_env)
    obs = observations(conditional_env, 2, 4)
    whole, _ = net.features(obs, net.initial_state(2))
    state, pieces = net.initial_state(2), []
    for t in range(4):
        features, state = net.features({k: v[:, t:t + 1] for k, v in obs.items()}, state)
        pieces.append(features)
    assert torch.allclose(torch.cat(pieces, dim=1), whole, atol=1e-5)


def test_the_rllib_module_trains_on_the_log_probs_it_sampled_with(conditional_env):
    env = conditional_env
    module = SpiralPolicyModule(
        observation_space=env.observation_space, action_space=env.action_space,
        model_config={"action_names": list(env.codec.names), "action_nvec": env.codec.nvec.tolist(),
                      "grid_size": 8, "conditional": True, "network": TINY.to_dict()},
    )
    obs = observations(env, batch=2, steps=4)
    state = {key: torch.as_tensor(np.stack([value] * 2)) for key, value in module.get_initial_state().items()}
    sampled = module.forward_exploration({Columns.OBS: obs, Columns.STATE_IN: state})
    # Acting records no autograd graph (the env runners' steps are never differentiated); training does.
    assert not any(tensor.requires_grad for tensor in (sampled[Columns.ACTION_LOGP], *sampled[Columns.STATE_OUT].values()))
    # Nor does it return the logits: the runner would store them in every step and ship them to the learner,
    # which recomputes them below.
    assert sorted(sampled) == sorted([Columns.ACTIONS, Columns.ACTION_LOGP, Columns.STATE_OUT])
    trained = module.forward_train({Columns.OBS: obs, Columns.STATE_IN: state, Columns.ACTIONS: sampled[Columns.ACTIONS]})
    assert trained[Columns.ACTION_DIST_INPUTS].requires_grad
    distribution = module.get_train_action_dist_cls().from_logits(trained[Columns.ACTION_DIST_INPUTS])
    assert torch.allclose(distribution.logp(sampled[Columns.ACTIONS]), sampled[Columns.ACTION_LOGP], atol=1e-5)
    values = module.compute_values({Columns.OBS: obs, Columns.STATE_IN: state}, trained[Columns.EMBEDDINGS])
    assert values.shape == (2, 4)
    assert isinstance(env.observation_space, gym.spaces.Dict)


def test_network_sizes_match_the_training_notes():
    env = PaintEnv(canvas_size=64, grid_size=32, target_source=np.zeros((1, 64, 64), np.uint8))
    small, paper = network(env, NetworkConfig.small()), network(env, NetworkConfig.spiral())
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(small) < 1.5e6 < count(paper)
