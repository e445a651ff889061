"""The Streamlit app driven by Streamlit's AppTest: every flow it can reach, and bad input."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from spiral.experiment import Experiment
from spiral.manifest import TrainingRecord
from spiral.shipped import GENERATION_AGENT, RECONSTRUCTION_AGENT
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


def test_the_shipped_reconstruction_agent_is_the_default_and_runs_are_offered(runs):
    app = start()
    options = app.sidebar.selectbox(key="agent").options
    assert app.sidebar.selectbox(key="agent").value == f"shipped: {RECONSTRUCTION_AGENT}"
    assert options[:2] == [f"shipped: {RECONSTRUCTION_AGENT}", f"shipped: {GENERATION_AGENT}"]
    assert "mnist-recon-1/best" in options and "untrained: mnist-gen" in options


def test_an_exported_agent_reconstructs_a_held_out_example(runs):
    app = start()
    app.sidebar.selectbox(key="agent").set_value("mnist-recon-1/best").run()
    assert "1,234 env steps" in " ".join(m.value for m in app.sidebar.markdown)
    assert [h.value for h in app.subheader] == ["Reconstruct", "Replay"]
    captions = [caption for image in app.image for caption in image.captions]
    assert "target: held-out example 0, as the agent sees it" in captions
    assert any(c.startswith("painting: L2") for c in captions)
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
    assert "UNTRAINED" in " ".join(m.value for m in app.sidebar.markdown)
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


def test_compare_paints_the_same_target_with_a_second_agent(runs):
    app = start()
    app.selectbox(key="other").set_value("untrained: mnist-recon").run()
    assert not app.exception
    captions = [caption for image in app.image for caption in image.captions]
    assert any(c.startswith(f"shipped {RECONSTRUCTION_AGENT}: L2") for c in captions)
    assert any(c.startswith("untrained mnist-recon: L2") for c in captions)


def test_compare_offers_an_agent_of_the_same_kind_first(runs):
    app = start()
    other = app.selectbox(key="other").value
    assert other not in (f"shipped: {RECONSTRUCTION_AGENT}", f"shipped: {GENERATION_AGENT}")
    assert not app.warning
