"""The Streamlit app driven by Streamlit's AppTest: every flow it can reach, and bad input."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from spiral.experiment import Experiment
from spiral.manifest import TrainingRecord
from app.agents import AUTOMATIC
from app.pictures import replay_gif
from spiral.agent import load_agent
from spiral.shipped import AGENTS_DIR, GENERATION_AGENT, PHOTO_AGENT, RECONSTRUCTION_AGENT
from tests.conftest import export_untrained

APP = str(Path(__file__).resolve().parent.parent / "app" / "spiral_app.py")


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """A runs folder holding one exported (untrained) mnist-recon agent."""
    export_untrained(tmp_path / "mnist-recon-1" / "best", "mnist-recon", Experiment.from_preset("mnist-recon").network_config(),
                     training=TrainingRecord(iterations=1, env_steps=1234))
    monkeypatch.setenv("SPIRAL_RUNS_DIR", str(tmp_path))
    return tmp_path


def start() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=180)
    app.run()
    assert not app.exception, app.exception
    return app


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_the_agent_is_chosen_by_the_picture_by_default_and_runs_are_offered(runs):
    app = start()
    picker = app.sidebar.selectbox(key="agent")
    assert picker.value == AUTOMATIC
    assert picker.options[:4] == [AUTOMATIC, f"shipped: {RECONSTRUCTION_AGENT}", f"shipped: {PHOTO_AGENT}",
                                  f"shipped: {GENERATION_AGENT}"]
    assert "mnist-recon-1/best" in picker.options and "untrained: mnist-gen" in picker.options


def chosen_agent(app: AppTest) -> str:
    """The page's line that says which agent the picture was given to."""
    return next(caption.value for caption in app.caption if caption.value.startswith("Painted by"))


def sidebar_text(app: AppTest) -> str:
    return " ".join(markdown.value for markdown in app.sidebar.markdown)


def test_a_colour_photo_goes_to_the_colour_agent_and_a_white_on_black_sketch_to_the_line_agent(runs):
    app = start()  # before any upload: the line agent, with its held-out digits
    assert f"Painted by shipped {RECONSTRUCTION_AGENT}" in chosen_agent(app)
    photo = Image.fromarray(skimage.data.astronaut())
    app.file_uploader[0].upload("astronaut.png", png(photo), "image/png").run()
    assert not app.exception and not app.error
    assert f"Painted by shipped {PHOTO_AGENT}, the shipped agent for your picture" in chosen_agent(app)
    assert "trained on**: photos in colour" in sidebar_text(app)
    painting = next(caption for image in app.image for caption in image.captions if caption.startswith("painting"))
    l2, blank = (float(number) for number in re.findall(r"\d\.\d{4}", painting))
    assert l2 < 0.5 * blank and "of it removed" in painting, painting
    sketch = Image.new("L", (120, 120), 0)
    ImageDraw.Draw(sketch).line([(20, 100), (60, 20), (100, 100)], fill=255, width=12)
    app.file_uploader[0].upload("sketch.png", png(sketch), "image/png").run()
    assert f"Painted by shipped {RECONSTRUCTION_AGENT}" in chosen_agent(app)
    assert "trained on**: mnist" in sidebar_text(app)


def test_a_reconstruction_chooses_each_stroke_among_the_agents_proposals_when_asked(runs):
    """The sidebar's "Proposals per step": the colour agent's painting of a photo, each stroke the best of 8 it
    proposes, comes nearer the photo than the agent alone, and so does it with each stroke hill-climbed too
    ("Hill-climbing rounds"); a generator, with no target to check, has neither slider."""
    app = start()
    app.file_uploader[0].upload("astronaut.png", png(Image.fromarray(skimage.data.astronaut())), "image/png").run()

    def painting() -> tuple[str, float]:
        caption = next(caption for image in app.image for caption in image.captions if caption.startswith("painting"))
        return caption, float(re.findall(r"L2 (\d\.\d{4})", caption)[0])

    assert app.sidebar.slider(key="proposals").value == 1
    alone, alone_l2 = painting()
    assert "proposals" not in alone
    app.sidebar.slider(key="proposals").set_value(8).run()
    assert not app.exception and not app.error
    chosen, chosen_l2 = painting()
    assert chosen.startswith("painting (seed 0, best of 8 proposals a stroke): L2") and chosen_l2 < alone_l2
    app.sidebar.slider(key="refine").set_value(2).run()  # and each chosen stroke hill-climbed
    assert not app.exception and not app.error
    refined, refined_l2 = painting()
    assert refined.startswith("painting (seed 0, best of 8 proposals a stroke, refined 2 rounds): L2")
    assert refined_l2 < alone_l2
    app.sidebar.selectbox(key="agent").set_value(f"shipped: {GENERATION_AGENT}").run()
    assert not app.exception
    assert not [slider for slider in app.sidebar.slider if slider.key in ("proposals", "refine")]


def test_an_exported_agent_reconstructs_a_held_out_example(runs):
    app = start()
    app.sidebar.selectbox(key="agent").set_value("mnist-recon-1/best").run()
    assert "1,234 env steps" in sidebar_text(app)
    assert [h.value for h in app.subheader] == ["Reconstruct", "Replay"]
    captions = [caption for image in app.image for caption in image.captions]
    assert "target: held-out example 0, as the agent sees it" in captions
    assert any(c.startswith("painting (seed 0): L2") for c in captions)
    assert [button.label for button in app.download_button] == ["PNG", "GIF", "JSON", "SVG"]


def test_an_uploaded_image_is_painted_and_the_slider_scrubs_the_replay(runs):
    app = start()
    photo = Image.new("RGB", (300, 200), "black")
    photo.paste(Image.new("RGB", (100, 120), "white"), (100, 40))
    app.file_uploader[0].upload("photo.jpg", png(photo, "JPEG"), "image/jpeg").run()
    assert not app.exception and not app.error
    stroke = app.slider(key="main-step")
    assert stroke.max == 15 and stroke.value == 15
    stroke.set_value(3).run()
    assert any("after stroke 3" in caption for image in app.image for caption in image.captions)
    app.toggle(key="main-play").set_value(True).run()
    assert any("replay" in caption for image in app.image for caption in image.captions)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "empty"),
        ("notes.png", b"this is not an image at all", "not an image"),
        ("cut.png", png(Image.new("RGB", (64, 64)))[:50], "corrupt or truncated"),
        ("bomb.png", png(Image.new("1", (9000, 9000))), "more than the 40,000,000 allowed"),
    ],
)
def test_bad_uploads_get_a_message_and_the_app_keeps_working(runs, name, content, message):
    app = start()
    app.file_uploader[0].upload(name, content, "image/png").run()
    assert not app.exception
    assert any(message in error.value for error in app.error)
    app.file_uploader[0].clear().run()
    assert not app.error and [h.value for h in app.subheader] == ["Reconstruct", "Replay"]


@pytest.mark.parametrize("mode", ["RGBA", "P", "CMYK", "I;16"])
def test_unusual_image_modes_are_painted(runs, mode):
    image = Image.new("RGB", (40, 40), (255, 0, 0)).convert(mode) if mode != "I;16" else Image.fromarray(
        (np.arange(1600, dtype=np.uint16).reshape(40, 40) * 40))
    app = start()
    app.file_uploader[0].upload("odd.tiff", png(image, "TIFF"), "image/tiff").run()
    assert not app.exception and not app.error


def test_an_untrained_unconditional_agent_generates_a_grid(runs):
    app = start()
    app.sidebar.selectbox(key="agent").set_value("untrained: mnist-gen").run()
    assert not app.exception
    assert "UNTRAINED" in sidebar_text(app)
    assert app.subheader[0].value == "Generate"
    assert sum(1 for image in app.image for caption in image.captions if caption.startswith("seed ")) == 8
    app.selectbox(key="pick").set_value(2).run()
    assert not app.exception


def test_a_folder_that_is_not_an_agent_is_refused_in_the_page(runs, tmp_path):
    app = start()
    app.sidebar.selectbox(key="agent").set_value("a folder...").run()
    app.sidebar.text_input(key="agent-path").input(str(tmp_path)).run()
    assert not app.exception
    assert any("not a spiral agent" in error.value for error in app.sidebar.error)


def test_a_damaged_agent_is_refused_without_showing_where_the_server_keeps_it(runs):
    (runs / "mnist-recon-1" / "best" / "agent.json").write_text("{ not json")
    app = start()
    app.sidebar.selectbox(key="agent").set_value("mnist-recon-1/best").run()
    (message,) = [error.value for error in app.sidebar.error]
    assert message.startswith("Cannot load that agent: ") and "mnist-recon-1/best" in message, message
    assert str(runs) not in message and str(Path(APP).parent.parent) not in message, message


def test_compare_paints_the_same_target_with_a_second_agent(runs):
    app = start()
    app.selectbox(key="other-reconstruct").set_value("untrained: mnist-recon").run()
    assert not app.exception
    captions = [caption for image in app.image for caption in image.captions]
    assert any(c.startswith(f"shipped {RECONSTRUCTION_AGENT}: L2") for c in captions)
    assert any(c.startswith("untrained mnist-recon: L2") for c in captions)


def test_compare_offers_an_agent_of_the_same_kind_first(runs):
    app = start()
    other = app.selectbox(key="other-reconstruct").value
    assert other not in (f"shipped: {RECONSTRUCTION_AGENT}", f"shipped: {GENERATION_AGENT}")
    assert not app.warning


def test_the_painting_re_renders_with_any_brush_at_up_to_1024_px_and_the_downloads_follow(runs):
    app = start()
    assert any(caption.startswith("256 px with classic/pen") for image in app.image for caption in image.captions)
    app.select_slider(key="main-size").set_value(1024).run()
    app.selectbox(key="main-brush").set_value("classic/charcoal").run()
    assert not app.exception and not app.error
    assert any(caption == "1024 px with classic/charcoal, the same strokes"
               for image in app.image for caption in image.captions)
    assert [button.label for button in app.download_button] == ["PNG", "GIF", "JSON", "SVG"]


def test_the_replay_gif_is_as_large_as_the_chosen_rendering():
    frames = [np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8)]
    for pixels in (256, 1024):
        with Image.open(io.BytesIO(replay_gif(frames, pixels))) as gif:
            assert gif.size == (pixels, pixels) and gif.n_frames == 2


def test_generated_samples_are_labelled_by_the_current_seed_and_greedy_paints_one(runs):
    app = start()
    app.sidebar.selectbox(key="agent").set_value("untrained: mnist-gen").run()
    app.sidebar.number_input(key="seed").set_value(5).run()
    assert app.selectbox(key="pick").options[:2] == ["seed 5", "seed 6"]
    assert app.selectbox(key="pick").value == 5
    app.sidebar.toggle(key="greedy").set_value(True).run()
    assert not app.exception
    captions = [caption for image in app.image for caption in image.captions]
    assert captions.count("greedy") == 1 and not any(caption.startswith("seed ") for caption in captions)


def test_a_sample_in_the_grid_is_the_painting_its_seed_gives_alone(runs):
    """The grid is painted in one batch (Agent.paint_all); a seed's painting must not depend on the others."""
    app = start()
    app.sidebar.selectbox(key="agent").set_value(f"shipped: {GENERATION_AGENT}").run()
    app.sidebar.number_input(key="seed").set_value(5).run()
    app.slider(key="samples").set_value(3).run()
    in_a_grid = {caption: image.value for image in app.image for caption in image.captions}
    app.sidebar.number_input(key="seed").set_value(6).run()
    app.slider(key="samples").set_value(1).run()
    alone = {caption: image.value for image in app.image for caption in image.captions}
    assert not app.exception
    label = next(caption for caption in alone if caption.startswith("seed 6"))
    assert in_a_grid[label] == alone[label]
    assert in_a_grid[label] != in_a_grid[label.replace("seed 6", "seed 7")]


def test_a_lower_temperature_paints_other_samples_and_says_so(runs):
    app = start()
    app.sidebar.selectbox(key="agent").set_value(f"shipped: {GENERATION_AGENT}").run()
    app.slider(key="samples").set_value(2).run()
    own = load_agent(AGENTS_DIR / GENERATION_AGENT).temperature  # the slider starts at the agent's own
    assert own != 1.0  # the shipped generator samples at a lower one: the slider must not keep the last agent's
    first = load_agent(AGENTS_DIR / GENERATION_AGENT).manifest.first_stroke_temperature  # which the slider keeps
    assert first is not None and first != own
    help_text = app.sidebar.slider(key="temperature").help
    assert app.sidebar.slider(key="temperature").value == own and f"This agent's own: {own:g}" in help_text
    assert f"Its first stroke, which chooses much of what it paints, stays at {first:g}" in help_text
    before = [image.value for image in app.image]
    app.sidebar.slider(key="temperature").set_value(0.6).run()
    assert not app.exception
    captions = [caption for image in app.image for caption in image.captions]
    assert all(f"seed {seed}, temperature 0.6, the first stroke at {first:g}" in captions for seed in (0, 1))
    assert [image.value for image in app.image] != before
    app.sidebar.toggle(key="greedy").set_value(True).run()  # greedy takes the likeliest strokes: no temperature
    assert not app.exception and not [slider for slider in app.sidebar.slider if slider.key == "temperature"]
    app.sidebar.toggle(key="greedy").set_value(False).run()  # sampled again: from the agent's own
    assert app.sidebar.slider(key="temperature").value == own
    app.sidebar.selectbox(key="agent").set_value("untrained: mnist-gen").run()  # another agent: its own, 1
    assert not app.exception and app.sidebar.slider(key="temperature").value == 1.0


def test_the_compare_picker_follows_the_kind_of_agent(runs):
    app = start()
    app.selectbox(key="other-reconstruct").set_value("untrained: mnist-recon").run()
    app.sidebar.selectbox(key="agent").set_value(f"shipped: {GENERATION_AGENT}").run()
    assert not app.exception and not app.warning
    assert app.selectbox(key="other-generate").value != "untrained: mnist-recon"


def test_a_sliver_of_an_image_is_painted_with_a_warning(runs):
    app = start()
    app.file_uploader[0].upload("sliver.png", png(Image.new("RGB", (1, 500), "white")), "image/png").run()
    assert not app.exception and not app.error
    assert any("1x500 pixels" in warning.value for warning in app.warning)
