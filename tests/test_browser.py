"""The app in a real browser: Debian's chromium, headless, against `spiral app` on localhost."""

import io
import os
import shutil
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import skimage.data
from PIL import Image
from playwright.sync_api import expect

from spiral.shipped import GENERATION_AGENT, PHOTO_AGENT
from tests.processes import free_port, streamlit_server
from tests.test_app import runs  # noqa: F401  (the fixture: a runs folder with one agent)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]


@pytest.fixture
def server(runs, tmp_path):  # noqa: F811
    """`spiral app` as a user starts it; stopping it must close its port (checked on the way out)."""
    port = free_port()
    spiral = shutil.which("spiral", path=os.path.dirname(sys.executable))
    with streamlit_server([spiral, "app", "--port", str(port)], port, log=tmp_path / "app.log",
                          env=os.environ | {"SPIRAL_RUNS_DIR": str(runs)}) as url:
        yield url


@pytest.fixture
def artifacts(tmp_path) -> Path:
    """Where screenshots go: SPIRAL_TEST_ARTIFACTS when set (the README's images), else the test's tmp dir."""
    folder = Path(os.environ.get("SPIRAL_TEST_ARTIFACTS", tmp_path / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() gives every browser a fresh, temporary profile (its own --user-data-dir).
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
        yield page
        browser.close()


def wait_for_the_download_buttons(page) -> None:
    """Until the page has finished: then it has one SVG button (while Streamlit reruns, the elements of
    the page before may still be there beside the new ones)."""
    expect(page.get_by_role("button", name="SVG", exact=True)).to_have_count(1, timeout=120_000)


def test_upload_scrub_play_and_download_in_a_real_browser(server, page, artifacts, tmp_path):
    page.goto(server)
    page.get_by_text("Reconstruct", exact=True).wait_for(timeout=120_000)
    upload = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(upload)  # a colour photo: the colour agent paints it
    page.locator("input[type=file]").set_input_files(str(upload))
    page.get_by_text(f"Painted by shipped {PHOTO_AGENT}").wait_for(timeout=120_000)
    page.get_by_text("painting: L2").wait_for(timeout=120_000)
    page.screenshot(path=str(artifacts / "app-reconstruct.png"), full_page=True)

    slider = page.get_by_role("slider", name="Stroke")
    slider.focus()
    page.keyboard.press("Home")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.get_by_text("after stroke 3").wait_for(timeout=60_000)

    page.get_by_text("Play the whole episode").click()
    page.get_by_text("replay (loops)").wait_for(timeout=60_000)
    sources = page.eval_on_selector_all("img", "images => images.map(image => image.src)")
    gifs = [source for source in sources if "gif" in source.lower()]
    assert gifs, sources
    data = page.request.get(gifs[0]).body()
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.n_frames > 1, "the replay does not animate"

    with page.expect_download() as download:
        page.get_by_role("button", name="SVG", exact=True).click()
    svg = tmp_path / "painting.svg"
    download.value.save_as(svg)
    assert ElementTree.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    page.screenshot(path=str(artifacts / "app-replay.png"), full_page=True)


def test_a_sketch_drawn_with_the_mouse_is_repainted(server, page, artifacts):
    page.goto(server)
    page.get_by_text("Reconstruct", exact=True).wait_for(timeout=120_000)
    page.get_by_text("Draw a target yourself").click()
    page.get_by_text("Draw with the mouse").wait_for(timeout=60_000)
    canvas = page.locator("canvas").last
    canvas.wait_for(timeout=60_000)
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x + step, y + step * 7)
    page.mouse.up()
    page.get_by_text("target: your drawing, as the agent sees it").wait_for(timeout=120_000)
    page.get_by_text("painting: L2").wait_for(timeout=120_000)
    wait_for_the_download_buttons(page)
    page.screenshot(path=str(artifacts / "app-draw.png"), full_page=True)


def test_an_unconditional_agent_generates_a_grid_in_the_browser(server, page, artifacts):
    page.goto(server)
    page.get_by_text("Reconstruct", exact=True).wait_for(timeout=120_000)
    wait_for_the_download_buttons(page)  # the first page is complete
    page.get_by_label("Agent").first.click()
    page.keyboard.type(f"shipped: {GENERATION_AGENT}")  # a Streamlit selectbox filters as one types
    page.keyboard.press("Enter")
    page.get_by_text("Generate", exact=True).wait_for(timeout=120_000)
    page.get_by_text("seed 7").first.wait_for(timeout=120_000)
    wait_for_the_download_buttons(page)
    page.screenshot(path=str(artifacts / "app-generate.png"), full_page=True)
