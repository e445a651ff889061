"""The inference API: exported agents load safely, paint reproducibly, refuse foreign files."""

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import spiral.agent
from envs import PaintConfig, PaintEnv, Program, mse
from envs.actions import PAINT
from spiral.agent import load_agent, set_temperature, store_in_float16, untrained_agent, write_agent, write_average
from spiral.experiment import DataSettings, Experiment
from spiral.images import open_image
from spiral.manifest import AGENT_FORMAT, AgentManifest, DiscriminatorRecord, TrainingRecord
from spiral.network_config import NetworkConfig
from spiral.search import hill_climb
from spiral.shipped import AGENTS_DIR, GENERATION_AGENT, PHOTO_AGENT
from tests.conftest import EXPLOIT_MARKER, damaged_folders

TINY = NetworkConfig(input_size=16, channels=8, res_blocks=1, hidden=32, embedding=8)
CONFIG = PaintConfig(canvas_size=32, grid_size=8, episode_length=5, use_color=False, background=(0, 0, 0),
                     fixed_color=(255, 255, 255))


@pytest.fixture
def exported(tmp_path):
    agent = untrained_agent(CONFIG, conditional=True, network=TINY)
    return write_agent(tmp_path / "agent", agent.policy.state_dict(), {}, agent.manifest)


def test_an_exported_agent_paints_a_target_of_any_size_reproducibly(exported):
    agent = load_agent(exported)
    target = np.zeros((100, 70, 3), np.uint8)
    target[30:70, 20:50] = 255
    first, second = agent.paint(target, seed=3), agent.paint(target, seed=3)
    assert len(first.frames) == 6 and first.canvas.shape == (32, 32, 3)
    assert first.target.shape == (32, 32, 3) and first.l2 == second.l2
    assert first.program.to_json() == second.program.to_json()
    assert (Program.from_json(first.program.to_json()).render() == first.canvas).all()
    greedy = [agent.paint(target, seed=seed, greedy=True).actions for seed in (1, 2)]
    assert greedy[0] == greedy[1]


def test_a_temperature_of_one_samples_the_policy_and_near_zero_is_greedy():
    agent = load_agent(AGENTS_DIR / GENERATION_AGENT)
    default = [agent.paint(seed=seed, temperature=1.0).actions for seed in range(3)]
    assert [agent.paint(seed=seed, temperature=1).actions for seed in range(3)] == default  # bit for bit
    greedy = agent.paint(greedy=True).actions
    assert all(agent.paint(seed=seed, temperature=1e-3, first_stroke_temperature=1e-3).actions == greedy
               for seed in range(3))
    assert [agent.paint(seed=seed, temperature=2.0).actions for seed in range(3)] != default
    for bad in (0, -1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            agent.paint(seed=0, temperature=bad)


def test_an_agent_samples_at_its_own_temperature_unless_told_otherwise(tmp_path):
    """agent.json's temperature (set_temperature, scripts/ship_agent.sh --temperature) is what paint() samples at
    by default; a caller's temperature wins; a bad one is refused and the folder left as it was."""
    agent = untrained_agent(CONFIG, conditional=False, network=TINY)
    folder = write_agent(tmp_path / "agent", agent.policy.state_dict(), {}, agent.manifest)
    assert load_agent(folder).temperature == 1.0
    set_temperature(folder, 0.5)
    cooled = load_agent(folder)
    assert cooled.temperature == 0.5 and json.loads((folder / "agent.json").read_text())["temperature"] == 0.5
    own = [cooled.paint(seed=seed).actions for seed in range(4)]
    assert own == [cooled.paint(seed=seed, temperature=0.5).actions for seed in range(4)]
    assert own != [cooled.paint(seed=seed, temperature=1.0).actions for seed in range(4)]
    before = (folder / "agent.json").read_bytes()
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            set_temperature(folder, bad)
    assert (folder / "agent.json").read_bytes() == before
    document = json.loads(before) | {"temperature": 0}
    (folder / "agent.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="field 'AgentManifest' is invalid: The sampling temperature must be"):
        load_agent(folder)
    (folder / "agent.json").write_text(json.dumps(document | {"temperature": "cold"}))
    with pytest.raises(ValueError, match="field 'temperature' must be a number, got 'cold'"):
        load_agent(folder)


def test_the_first_stroke_has_its_own_temperature_where_agent_json_names_one(tmp_path):
    """A generator's first stroke chooses much of what it paints: it may be drawn at another temperature than the
    later strokes (agent.json's first_stroke_temperature, a caller's first_stroke_temperature), the later strokes as
    they would be at their own; naming only ``temperature`` keeps the agent's first stroke."""
    agent = untrained_agent(CONFIG, conditional=False, network=TINY)
    folder = write_agent(tmp_path / "agent", agent.policy.state_dict(), {}, agent.manifest)
    plain = load_agent(folder)
    assert plain.manifest.first_stroke_temperature is None and plain.sampling_temperatures() == (1.0, 1.0)
    assert plain.sampling_temperatures(0.5) == (0.5, 0.5)  # none named: the first stroke follows the others

    def strokes(painter, seed, **temperatures):
        return painter.paint(seed=seed, **temperatures).actions

    seeds = range(6)
    hot, cold = ([strokes(plain, seed, temperature=t) for seed in seeds] for t in (3.0, 0.2))
    mixed = [strokes(plain, seed, temperature=0.2, first_stroke_temperature=3.0) for seed in seeds]
    assert [m[0] for m in mixed] == [h[0] for h in hot]  # the first stroke as at its temperature, draw for draw
    assert [m[0] for m in mixed] != [c[0] for c in cold] and mixed != hot
    set_temperature(folder, 0.2, first_stroke_temperature=3.0)
    shipped = load_agent(folder)
    assert json.loads((folder / "agent.json").read_text())["first_stroke_temperature"] == 3.0
    assert shipped.sampling_temperatures() == (3.0, 0.2) and shipped.sampling_temperatures(0.7) == (3.0, 0.7)
    assert shipped.sampling_temperatures(0.7, 1.0) == (1.0, 0.7)
    assert [strokes(shipped, seed) for seed in seeds] == mixed
    assert [strokes(shipped, seed, first_stroke_temperature=0.2) for seed in seeds] == cold
    before = (folder / "agent.json").read_bytes()
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            set_temperature(folder, 0.5, first_stroke_temperature=bad)
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            shipped.paint(seed=0, first_stroke_temperature=bad)
    assert (folder / "agent.json").read_bytes() == before
    (folder / "agent.json").write_text(json.dumps(json.loads(before) | {"first_stroke_temperature": "hot"}))
    with pytest.raises(ValueError, match="field 'first_stroke_temperature' must be a number, got 'hot'"):
        load_agent(folder)


def test_conditional_agents_need_a_target_and_unconditional_ones_refuse_one(exported):
    with pytest.raises(ValueError, match="pass target"):
        load_agent(exported).paint()
    with pytest.raises(ValueError, match="takes no target"):
        untrained_agent(CONFIG, conditional=False, network=TINY).paint(np.zeros((32, 32), np.uint8))


@pytest.mark.parametrize("greedy", [True, False])
def test_painting_many_at_once_paints_what_painting_each_alone_does(greedy):
    """paint_all runs the network on all the episodes at once; each is the painting paint() gives alone, with its
    own seed, whichever others share its batch (real digits, the shipped reconstruction agent and generator)."""
    reconstructor = load_agent(AGENTS_DIR / "mnist-pen")
    digits = Experiment.from_preset("mnist-pen").images("test", 5)
    together = reconstructor.paint_all(digits, seeds=[4, 0, 3, 1, 2], greedy=greedy)
    alone = [reconstructor.paint(digit, seed=seed, greedy=greedy) for digit, seed in zip(digits, [4, 0, 3, 1, 2])]
    assert [episode.actions for episode in together] == [episode.actions for episode in alone]
    assert [episode.l2 for episode in together] == [episode.l2 for episode in alone]
    assert all((a.canvas == b.canvas).all() and (a.target == b.target).all() for a, b in zip(together, alone))
    generator = load_agent(AGENTS_DIR / GENERATION_AGENT)
    assert ([episode.actions for episode in generator.paint_all(seeds=[7, 8, 9], greedy=greedy)]
            == [generator.paint(seed=seed, greedy=greedy).actions for seed in (7, 8, 9)])


def test_painting_more_than_a_batch_splits_it_and_seeds_follow_the_targets(exported, monkeypatch):
    agent = load_agent(exported)
    targets = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), np.uint8)
    whole = agent.paint_all(targets)  # seeds 0..4
    monkeypatch.setattr(spiral.agent, "PAINT_BATCH", 2)
    assert [episode.actions for episode in agent.paint_all(targets)] == [episode.actions for episode in whole]
    assert [episode.actions for episode in whole] == [agent.paint(target, seed=i).actions
                                                      for i, target in enumerate(targets)]


def test_painting_many_refuses_mismatched_or_missing_inputs(exported):
    conditional, unconditional = load_agent(exported), untrained_agent(CONFIG, conditional=False, network=TINY)
    targets = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="pass targets"):
        conditional.paint_all(seeds=[0, 1])
    for one_image in (targets[0], Image.fromarray(targets[0])):
        with pytest.raises(ValueError, match="targets is one image"):
            conditional.paint_all(one_image)
    with pytest.raises(ValueError, match="Got 3 seeds for 2 targets"):
        conditional.paint_all(targets, seeds=[0, 1, 2])
    with pytest.raises(ValueError, match="seed must be an integer"):
        conditional.paint_all(targets, seeds=[0, -1])
    with pytest.raises(ValueError, match="needs seeds"):
        unconditional.paint_all()
    with pytest.raises(ValueError, match="takes no target"):
        unconditional.paint_all(targets, seeds=[0, 1])
    assert conditional.paint_all(targets[:0]) == [] and unconditional.paint_all(seeds=[]) == []


def test_writing_an_agent_replaces_the_old_folder_whole(exported):
    before = load_agent(exported).policy.state_dict()
    newer = untrained_agent(CONFIG, conditional=True, network=TINY, seed=9).policy.state_dict()
    write_agent(exported, newer, {}, load_agent(exported).manifest)
    after = load_agent(exported).policy.state_dict()
    assert not torch.equal(before["stem.weight"], after["stem.weight"])
    assert sorted(p.name for p in exported.parent.iterdir()) == ["agent"]  # no staging leftovers


def test_an_agent_stored_in_float16_loads_as_float32_with_the_rounded_weights(exported):
    before = load_agent(exported)
    store_in_float16(exported)
    stored = torch.load(exported / "policy.pt", weights_only=True)
    assert {value.dtype for value in stored.values() if value.is_floating_point()} == {torch.float16}
    after = load_agent(exported)
    for key, value in after.policy.state_dict().items():
        assert value.dtype == before.policy.state_dict()[key].dtype
        assert torch.equal(value, before.policy.state_dict()[key].half().to(value.dtype))
    target = np.zeros((32, 32, 3), np.uint8)
    target[8:24, 12:20] = 255
    assert after.paint(target, seed=0, greedy=True).canvas.shape == (32, 32, 3)
    state = before.policy.state_dict()
    state["stem.weight"][0, 0, 0, 0] = 1e6  # beyond float16's largest, 65,504
    write_agent(exported, state, {}, before.manifest)
    with pytest.raises(ValueError, match="beyond float16's range: keep it in float32"):
        store_in_float16(exported)
    assert torch.equal(load_agent(exported).policy.state_dict()["stem.weight"], state["stem.weight"])  # untouched


def test_spiral_average_writes_the_weighted_mean_of_agents_that_share_a_network(exported, tmp_path, capsys):
    from spiral.cli import main

    other = untrained_agent(CONFIG, conditional=True, network=TINY, seed=9)
    other_folder = write_agent(tmp_path / "other", other.policy.state_dict(), {}, other.manifest)
    set_temperature(exported, 0.8)
    main(["average", str(exported), str(other_folder), "--weights", "1", "3", "--out", str(tmp_path / "mean")])
    assert "the mean of 2 agents, weights 1, 3" in capsys.readouterr().out
    first, second = load_agent(exported).policy.state_dict(), other.policy.state_dict()
    mean = load_agent(tmp_path / "mean")
    for key, value in mean.policy.state_dict().items():
        assert torch.allclose(value, 0.25 * first[key] + 0.75 * second[key], atol=1e-7), key
    assert not torch.equal(mean.policy.state_dict()["stem.weight"], first["stem.weight"])
    assert mean.manifest == load_agent(exported).manifest and mean.temperature == 0.8  # the first one's agent.json
    assert write_average(tmp_path / "same", [exported, exported]).is_dir()  # equal tensors are kept exactly
    assert all(torch.equal(value, first[key]) for key, value in load_agent(tmp_path / "same").policy.state_dict().items())
    target = np.zeros((32, 32, 3), np.uint8)
    target[8:24, 12:20] = 255
    assert mean.paint(target, seed=0, greedy=True).canvas.shape == (32, 32, 3)
    # Another brush (a clone cloned further with --brush) averages too; the mean paints with the first one's.
    pen = untrained_agent(dataclasses.replace(CONFIG, brush="spiral/felt_pen"), conditional=True, network=TINY, seed=9)
    pen_folder = write_agent(tmp_path / "pen", pen.policy.state_dict(), {}, pen.manifest)
    main(["average", str(pen_folder), str(exported), "--out", str(tmp_path / "pen-mean")])
    pen_mean = load_agent(tmp_path / "pen-mean")
    assert pen_mean.paint_config.brush == "spiral/felt_pen" and pen_mean.manifest == pen.manifest
    pen_weights = pen.policy.state_dict()
    assert all(torch.allclose(value, 0.5 * pen_weights[key] + 0.5 * first[key], atol=1e-7)
               for key, value in pen_mean.policy.state_dict().items())


def test_spiral_average_refuses_agents_that_do_not_average_and_a_folder_it_would_wipe(exported, tmp_path):
    from spiral.cli import main

    wider = untrained_agent(CONFIG, conditional=True, network=NetworkConfig(**{**TINY.to_dict(), "hidden": 48}))
    wider_folder = write_agent(tmp_path / "wider", wider.policy.state_dict(), {}, wider.manifest)
    with pytest.raises(SystemExit, match="wider differs from .* in network: only agents with the same actions"):
        main(["average", str(exported), str(wider_folder), "--out", str(tmp_path / "mean")])
    longer = untrained_agent(dataclasses.replace(CONFIG, episode_length=6), conditional=True, network=TINY)
    longer_folder = write_agent(tmp_path / "longer", longer.policy.state_dict(), {}, longer.manifest)
    with pytest.raises(SystemExit, match="longer differs from .* in env: only agents with the same actions"):
        main(["average", str(exported), str(longer_folder), "--out", str(tmp_path / "mean")])
    with pytest.raises(SystemExit, match="Averaging needs two agents or more, got 1"):
        main(["average", str(exported), "--out", str(tmp_path / "mean")])
    with pytest.raises(SystemExit, match="1 weights for 2 agents"):
        main(["average", str(exported), str(exported), "--weights", "1", "--out", str(tmp_path / "mean")])
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="notes exists and is not an agent folder"):
        main(["average", str(exported), str(exported), "--out", str(keep)])
    with pytest.raises(SystemExit, match="mine.txt exists and is not an agent folder"):
        main(["average", str(exported), str(exported), "--out", str(keep / "mine.txt")])
    assert (keep / "mine.txt").read_text() == "keep me" and not (tmp_path / "mean").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "agent.json").unlink(), "has no agent.json"),
        *damaged_folders(AGENT_FORMAT, "agent.json", "policy.pt", "stem.weight"),
    ],
)
def test_damaged_or_foreign_agents_are_refused_with_a_reason(exported, damage, message):
    damage(exported)
    with pytest.raises(ValueError, match=message):
        load_agent(exported)
    assert not (exported.parent / EXPLOIT_MARKER).exists()  # a pickle that runs code is never executed


def full_manifest() -> dict:
    """A manifest with every field, as the trainer writes one."""
    return AgentManifest("digits", CONFIG, TINY, True, DataSettings("mnist", invert=True),
                         discriminator=DiscriminatorRecord("wgan-gp", 32, 16, False),
                         training=TrainingRecord(iterations=3, env_steps=960)).to_dict()


def test_a_manifest_survives_json_and_says_whether_its_agent_was_trained():
    manifest = AgentManifest.from_dict(json.loads(json.dumps(full_manifest())))
    assert manifest.to_dict() == full_manifest()
    assert manifest.env == CONFIG and manifest.network == TINY and manifest.data.invert
    assert not manifest.untrained and untrained_agent(CONFIG, conditional=True, network=TINY).manifest.untrained
    assert manifest.action_nvec == tuple(untrained_agent(CONFIG, conditional=True, network=TINY).policy.nvec)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.pop("env"), "field 'env' is missing"),
        (lambda m: m.update(colour=True), "field 'colour' is not a field of AgentManifest"),
        (lambda m: m.update(conditional="yes"), "field 'conditional' must be true or false, got 'yes'"),
        (lambda m: m.update(name=None), "field 'name' must be a string, got None"),
        (lambda m: m["env"].update(canvas_size=0), "field 'env' is invalid: Invalid PaintConfig: canvas_size"),
        (lambda m: m["env"].update(colour=1), r"field 'env' is invalid: Unknown PaintConfig setting\(s\) \['colour'\]"),
        (lambda m: m["network"].update(hidden="32"), "field 'network.hidden' must be an integer, got '32'"),
        (lambda m: m["data"].update(invert=1), "field 'data.invert' must be true or false, got 1"),
        (lambda m: m.update(data=[]), "field 'data' must be a JSON object"),
        (lambda m: m["training"].pop("env_steps"), "field 'training.env_steps' is missing"),
        (lambda m: m["discriminator"].update(size=32.5), "field 'discriminator.size' must be an integer"),
        (lambda m: m.pop("action_names"), "field 'action_names' is missing"),
        (lambda m: m.update(action_nvec=[64, 64]), r"field 'action_nvec' is \[64, 64\], but these env settings give"),
    ],
)
def test_a_corrupt_manifest_is_refused_naming_the_field(exported, mutate, message):
    manifest = full_manifest()
    mutate(manifest)
    (exported / "agent.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"agent.json does not describe a usable agent: {message}"):
        load_agent(exported)


def test_optional_records_may_be_absent_or_null():
    manifest = full_manifest()
    del manifest["data"], manifest["reward"]
    manifest["training"] = None
    loaded = AgentManifest.from_dict(manifest)
    assert loaded.data == DataSettings() and loaded.reward is None and loaded.untrained


def test_a_missing_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="No agent folder"):
        load_agent(tmp_path / "nope")


def image_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_common_formats_open_as_rgb(fmt):
    picture = Image.new("RGB", (40, 30), (200, 10, 10))
    opened = open_image(image_bytes(picture, fmt))
    assert opened.mode == "RGB" and opened.size == (40, 30)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.fromarray(np.full((8, 8), 65535, np.uint16)), (0, 0, 0)),  # 16-bit, flat: scaled to 0
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("P", (8, 8), 3), None),
        (Image.new("RGBA", (8, 8), (10, 20, 30, 0)), (10, 20, 30, 0)),  # transparency is kept for the agent
        (Image.new("LA", (8, 8), (0, 255)), (0, 0, 0, 255)),
    ],
)
def test_unusual_modes_become_rgb_or_rgba_with_transparency(image, expected):
    opened = open_image(image_bytes(image, "TIFF" if image.mode in ("CMYK", "I;16") else "PNG"))
    assert opened.mode == ("RGBA" if image.mode in ("RGBA", "LA") else "RGB")
    if expected is not None:
        assert opened.getpixel((0, 0)) == expected


def test_a_transparent_picture_lies_on_the_agents_own_canvas_colour(exported):
    """White strokes on a transparent ground stay visible to a white-on-black agent, black ones to a
    black-on-white agent: the transparent part becomes the canvas colour, not always white."""
    def sketch(ink: int) -> Image.Image:
        picture = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
        picture.paste((ink, ink, ink, 255), (8, 8, 24, 24))
        return open_image(image_bytes(picture, "PNG"))

    agent = load_agent(exported)
    assert agent.paint_config.background == (0, 0, 0)
    target = agent.prepare_target(sketch(255))
    assert target[0, 0].tolist() == [0, 0, 0] and target[16, 16].tolist() == [255, 255, 255]
    white_canvas = untrained_agent(PaintConfig(canvas_size=32), conditional=True, network=TINY)
    target = white_canvas.prepare_target(sketch(0))
    assert target[0, 0].tolist() == [255, 255, 255] and target[16, 16].tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 not an image", "not an image"),
        (image_bytes(Image.new("RGB", (64, 64)), "PNG")[:60], "corrupt or truncated"),
    ],
)
def test_bad_uploads_are_refused(data, message):
    with pytest.raises(ValueError, match=message):
        open_image(data)


def test_decompression_bombs_are_refused_before_decoding():
    with pytest.raises(ValueError, match="more than the 1,000 allowed"):
        open_image(image_bytes(Image.new("L", (100, 100)), "PNG"), max_pixels=1000)


def test_a_large_photo_is_decoded_downscaled_in_a_fraction_of_its_memory(tmp_path):
    """open_image(max_side=...): the picture as a full decode fitted to that size, at a fraction of the peak memory."""
    photo = tmp_path / "photo.jpg"
    Image.fromarray(skimage.data.astronaut()).resize((6000, 4000)).save(photo, quality=90)  # 24 megapixels
    full = open_image(photo)
    full.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
    fitted = open_image(photo, max_side=1024)
    assert fitted.size == full.size == (1024, 683) and fitted.info["original_size"] == (6000, 4000)
    assert np.abs(np.asarray(fitted, np.int16) - np.asarray(full, np.int16)).mean() < 2

    def peak_mib(max_side: str) -> int:
        """How far a fresh process's resident memory peaks above where it stood once imports were done."""
        code = ("from pathlib import Path; from spiral.images import open_image\n"
                "def status(key): return int(next(line.split()[1] for line in Path('/proc/self/status')"
                ".read_text().splitlines() if line.startswith(key)))\n"
                "Path('/proc/self/clear_refs').write_text('5')  # the peak (VmHWM) starts again from here\n"
                f"before = status('VmRSS:'); open_image({str(photo)!r}, max_side={max_side})\n"
                "print((status('VmHWM:') - before) // 1024)")
        return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)

    assert peak_mib("1024") < peak_mib("None") - 50  # the full decode alone is 72 MB


def test_an_animated_gif_opens_at_its_first_frame():
    frames = [Image.new("RGB", (10, 10), color) for color in ((255, 0, 0), (0, 255, 0))]
    data = image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert open_image(data).getpixel((0, 0)) == (255, 0, 0)


def test_very_wide_or_tall_targets_keep_their_aspect_ratio(exported):
    agent = load_agent(exported)
    wide = np.full((10, 400), 255, np.uint8)  # a white bar on the agent's black background
    prepared = agent.prepare_target(wide)
    assert prepared.shape == (32, 32, 3)
    rows = np.nonzero(prepared[..., 0].max(axis=1) > 128)[0]
    assert len(rows) <= 3 and (prepared[0] == 0).all()  # letterboxed, not stretched


def replayed_with_the_policys_choice(agent, episode) -> Iterator[tuple[PaintEnv, np.ndarray, np.ndarray]]:
    """Replay a conditional ``episode`` state by state: before each step, the environment, the action painted and
    the greedy policy's own choice in that state; the replay must end at the episode's error."""
    env = PaintEnv(agent.paint_config, target_source=episode.target[None])
    try:
        observation, _ = env.reset(seed=0, options={"target": episode.target})
        state = agent.policy.initial_state(1)
        for action in map(np.asarray, episode.actions):
            with torch.no_grad():
                features, state = agent.policy.features(
                    {key: torch.as_tensor(value[None, None]) for key, value in observation.items()}, state)
                own = agent.policy.sample(features, greedy=True)[0][0, 0].numpy()
            yield env, action, own
            observation = env.step(action)[0]
        assert env.l2() == episode.l2
    finally:
        env.close()


@pytest.mark.parametrize("choice", [{"proposals": 6}, {"refine": 100}], ids=["proposals", "refine"])
def test_proposals_and_refining_paint_no_stroke_worse_than_the_agents_own_and_lower_the_error(choice):
    """With proposals, each stroke is the best of the policy's own choice and its samples; with refining, the
    policy's painting stroke is hill-climbed against the target. Replayed state by state, no painted stroke leaves
    more error than the greedy policy's choice in that state would; a stroke refined without a limit is one no
    neighbour improves (one more round changes nothing), and a pen-up move is painted as the policy chose it. On
    real digits the paintings come nearer their targets than the greedy agent's (shipped reconstruction agent)."""
    agent = load_agent(AGENTS_DIR / "mnist-pen")
    digits = Experiment.from_preset("mnist-pen").images("test", 6)
    greedy = agent.paint_all(digits, greedy=True)
    assert [e.actions for e in agent.paint_all(digits, greedy=True, proposals=1, refine=0)] == \
        [e.actions for e in greedy]
    chosen = agent.paint_all(digits, greedy=True, **choice)
    assert np.mean([e.l2 for e in chosen]) < np.mean([e.l2 for e in greedy])
    for seed, digit in enumerate(digits[:2]):
        episode = agent.paint(digit, seed=seed, greedy=True, **choice)
        assert episode.actions == chosen[seed].actions  # painted alone as in the batch
        np.testing.assert_array_equal(Program.from_json(episode.program.to_json()).render(), episode.canvas)
        for env, action, own in replayed_with_the_policys_choice(agent, episode):
            assert env.l2_after(action) <= env.l2_after(own)
            if "refine" not in choice:
                continue
            if own[env.codec.index["flag"]] == PAINT:
                climbed, _ = hill_climb(env.codec, action, env.l2_after(action), env.l2_after, 1)
                assert np.array_equal(climbed, action)  # a local best
            else:
                assert np.array_equal(action, own)


def test_proposals_that_paint_the_same_stroke_are_checked_once(monkeypatch):
    """The photo agent proposes its first stroke, a wide one for the background, mostly the same way, and with
    fitted colours proposals that differ in colour alone paint the same stroke: each is drawn on the scratch
    canvas once a step, and the paintings come nearer the crops than the greedy agent's."""
    agent = load_agent(AGENTS_DIR / PHOTO_AGENT)
    checked, proposals, episodes = [], 8, 2
    check = PaintEnv.l2_after

    def checked_once(env, action):
        checked.append((id(env), len(env.program.strokes), spiral.agent._stroke_key(env, action)))
        return check(env, action)

    monkeypatch.setattr(PaintEnv, "l2_after", checked_once)
    crops = Experiment.from_preset(PHOTO_AGENT).images("validation")[:episodes]
    painted = agent.paint_all(crops, greedy=True, proposals=proposals)
    assert len(set(checked)) == len(checked)  # no stroke checked twice in a state
    assert len(checked) < episodes * agent.paint_config.episode_length * proposals  # and repeats were proposed
    greedy = agent.paint_all(crops, greedy=True)
    assert all(chosen.l2 < alone.l2 for chosen, alone in zip(painted, greedy))


def test_an_agent_with_fitted_colours_refits_them_together_and_shows_what_it_painted():
    """``env.fit_color``: the finished painting's colours are re-chosen jointly (``envs.color_fit.refit_colors``).
    The episode is the refitted painting (its program, frames and actions agree, and it replays), never further
    from the target than the stroke-by-stroke fit that the environment paints from the same actions, and nearer
    in some paintings."""
    config = PaintConfig(canvas_size=32, grid_size=8, episode_length=6, brush="classic/pen", use_pressure=False,
                         fit_color=True)
    agent = untrained_agent(config, conditional=True, network=TINY)
    episodes = agent.paint_all([skimage.data.astronaut()] * 6, seeds=range(6))
    nearer = 0
    for episode in episodes:
        program = episode.program
        assert len(episode.frames) == 7 and all((replayed == shown).all()
                                                for replayed, shown in zip(program.frames(), episode.frames))
        env = PaintEnv(config, target_source=episode.target[None])
        try:
            env.reset(seed=0, options={"target": episode.target})
            for painted, stroke in zip(episode.actions, program.strokes, strict=True):
                assert env.codec.encode(stroke).tolist() == painted
                env.step(np.array(painted))  # the environment fits each colour anew, stroke by stroke
            assert episode.l2 == float(mse(episode.canvas, episode.target)) and episode.l2 <= env.l2()
            nearer += episode.l2 < env.l2()
        finally:
            env.close()
    assert nearer >= 2


def test_proposals_are_refused_when_they_cannot_be_counted_or_checked(exported):
    agent, target = load_agent(exported), np.zeros((32, 32), np.uint8)
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ValueError, match="proposals must be a whole number of strokes, 1 or more"):
            agent.paint(target, seed=0, proposals=bad)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="refine must be a whole number of hill-climbing rounds, 0 or more"):
            agent.paint(target, seed=0, refine=bad)
    generator = untrained_agent(CONFIG, conditional=False, network=TINY)
    for options in ({"proposals": 2}, {"refine": 1}):
        with pytest.raises(ValueError, match="Proposals and refining are checked against a target"):
            generator.paint_all(seeds=[0], **options)
    assert len(generator.paint(seed=0, proposals=1).actions) == CONFIG.episode_length


def test_a_painting_says_how_its_strokes_were_chosen():
    assert spiral.agent.stroke_choice_label(1, 0) == ""
    assert spiral.agent.stroke_choice_label(8, 0) == ", best of 8 proposals a stroke"
    assert spiral.agent.stroke_choice_label(1, 1) == ", refined 1 round"
    assert spiral.agent.stroke_choice_label(8, 4) == ", best of 8 proposals a stroke, refined 4 rounds"
