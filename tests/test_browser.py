"""The app in a real browser: Debian's chromium, headless, against `spiral app` on localhost."""

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import skimage.data
from PIL import Image
from playwright.sync_api import expect

from spiral.curves import read_logs
from spiral.shipped import GENERATION_AGENT, PHOTO_AGENT
from tests.processes import free_port, listening_process, resident_bytes, streamlit_server
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


def wait_until_idle(page) -> None:
    """Until Streamlit's run has finished: no element left stale from the run before, no running icon."""
    expect(page.locator("[data-stale='true']")).to_have_count(0, timeout=120_000)
    expect(page.locator("[data-testid^='stStatusWidgetRunning']")).to_have_count(0, timeout=120_000)


def wait_until_the_page_is_done(page) -> None:
    """Until the Paint page's run has finished, with its one SVG button. A download clicked during a run may
    fetch a file that the run's end removes (canceled)."""
    expect(page.get_by_role("button", name="SVG", exact=True)).to_have_count(1, timeout=120_000)
    wait_until_idle(page)


def test_upload_scrub_play_and_download_in_a_real_browser(server, page, artifacts, tmp_path):
    page.goto(server)
    page.get_by_text("Reconstruct", exact=True).wait_for(timeout=120_000)
    upload = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(upload)  # a colour photo: the colour agent paints it
    page.locator("input[type=file]").set_input_files(str(upload))
    page.get_by_text(f"Painted by shipped {PHOTO_AGENT}").wait_for(timeout=120_000)
    page.get_by_text("painting (seed 0): L2").wait_for(timeout=120_000)
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

    wait_until_the_page_is_done(page)
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
    canvas.hover()  # the toolbar (undo, redo, clear) rises above the canvas
    page.wait_for_timeout(500)
    toolbar = page.locator(".dc-toolbar-card").bounding_box()
    label = page.get_by_text("Draw a target yourself").bounding_box()
    assert toolbar["y"] >= label["y"] + label["height"], (toolbar, label)  # it covers nothing above it
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x + step, y + step * 7)
    page.mouse.up()
    page.get_by_text("target: your drawing, as the agent sees it").wait_for(timeout=120_000)
    page.get_by_text("painting (seed 0): L2").wait_for(timeout=120_000)
    wait_until_the_page_is_done(page)
    page.screenshot(path=str(artifacts / "app-draw.png"), full_page=True)


def test_an_unconditional_agent_generates_a_grid_in_the_browser(server, page, artifacts):
    page.goto(server)
    page.get_by_text("Reconstruct", exact=True).wait_for(timeout=120_000)
    wait_until_the_page_is_done(page)  # the first page is complete
    page.get_by_label("Agent").first.click()
    page.keyboard.type(f"shipped: {GENERATION_AGENT}")  # a Streamlit selectbox filters as one types
    page.keyboard.press("Enter")
    page.get_by_text("Generate", exact=True).wait_for(timeout=120_000)
    page.get_by_text("seed 7").first.wait_for(timeout=120_000)
    wait_until_the_page_is_done(page)
    page.screenshot(path=str(artifacts / "app-generate.png"), full_page=True)


def test_the_training_page_follows_a_run_as_it_trains(server, page, runs, artifacts, tmp_path):  # noqa: F811
    """A run that `spiral train` starts while the page is open appears, and its checkpoints show as they come,
    the last one included, without a reload."""
    page.goto(f"{server}/training")
    page.get_by_text("No runs in the runs folder").wait_for(timeout=120_000)
    train(["--preset", "smoke", "--runs-dir", str(runs), "--name", "live", "--iterations", "4", "checkpoint.every=2"],
          tmp_path)
    page.get_by_text("live: stopped").wait_for(timeout=60_000)  # the caption under the run's name
    final, _ = read_logs(runs / "live").grid  # the env steps of the last checkpoint's painting grid
    expect(page.get_by_text(re.compile(r"newest paintings, at [\d,]+ env steps"))).to_have_text(
        re.compile(rf"at {final:,} env steps"), timeout=60_000)
    page.get_by_text("Follow the runs").click()  # stop looking again: the screenshot shows one whole page
    wait_until_idle(page)
    page.screenshot(path=str(artifacts / "app-training.png"), full_page=True)
    page.get_by_role("button", name="Paint with live/best").click()
    page.get_by_text("painting (seed 0): L2").wait_for(timeout=120_000)
    sidebar = page.get_by_test_id("stSidebar").inner_text()
    assert "agent: smoke" in sidebar, sidebar  # the run's export, not the automatic choice (a shipped agent)


def train(arguments: list[str], tmp_path: Path) -> None:
    """`spiral train ARGUMENTS`, to its end; Ctrl-C if the test fails meanwhile."""
    spiral = shutil.which("spiral", path=os.path.dirname(sys.executable))
    with open(tmp_path / "train.log", "wb") as log:
        trainer = subprocess.Popen([spiral, "train", *arguments], stdout=log, stderr=subprocess.STDOUT)
        try:
            assert trainer.wait(timeout=180) == 0, (tmp_path / "train.log").read_text()[-3000:]
        finally:
            if trainer.poll() is None:
                trainer.send_signal(signal.SIGINT)  # the trainer stops Ray on its way out
                trainer.wait(timeout=60)


def test_scrubbing_fast_through_the_strokes_loads_every_picture(server, page):
    """Each stroke shown while scrubbing is a new picture; none may be asked for after the server let go of it."""
    failed = []
    page.on("response", lambda response: failed.append(f"{response.status} {response.url}")
            if response.status >= 400 else None)
    page.on("requestfailed", lambda request: failed.append(f"failed {request.url}"))
    page.goto(server)
    page.get_by_text("painting (seed 0): L2").wait_for(timeout=120_000)
    wait_until_the_page_is_done(page)
    page.get_by_role("slider", name="Stroke").focus()
    for key in ["ArrowLeft"] * 15 + ["ArrowRight"] * 15 + ["ArrowLeft"] * 15:  # each press a new picture
        page.keyboard.press(key, delay=20)
    page.get_by_text("after stroke 0", exact=True).wait_for(timeout=60_000)
    wait_until_the_page_is_done(page)
    assert not failed, failed


def soak_uploads(folder: Path, count: int) -> list[Path]:
    """``count`` different pictures: crops of scikit-image's photos, every tenth a 36-megapixel JPEG."""
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    files = []
    for index in range(count):
        photo = Image.fromarray(photos[index % len(photos)])
        side = 120 + 7 * index
        crop = photo.crop((index, index, index + side, index + side))
        if index % 10 == 9:
            crop = crop.resize((6000, 6000))
        files.append(folder / f"upload-{index}.jpg")
        crop.save(files[-1], quality=90)
    return files


def server_process(url: str) -> int:
    """The PID of the app's server at ``url``."""
    return listening_process(int(url.rsplit(":", 1)[1]))


def test_the_server_keeps_few_malloc_arenas(server):
    """What keeps the server's memory flat (the soak test below measures it): two glibc arenas, not one per thread."""
    environment = Path(f"/proc/{server_process(server)}/environ").read_bytes()
    assert b"MALLOC_ARENA_MAX=2" in environment.split(b"\0")


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_the_server_s_memory_stays_flat_over_200_paintings_and_50_uploads(server, page, tmp_path):
    """A demo that stays up: after a warm-up the server's memory grows by under 10% over the rest of the session.

    3 to 4 minutes, so not in the default run: `bash scripts/test.sh -m soak`."""
    uploads = soak_uploads(tmp_path, 50)
    page.goto(server)
    page.get_by_text("painting (seed 0): L2").wait_for(timeout=120_000)
    seed = page.get_by_role("spinbutton", name="Seed")
    pid = server_process(server)

    def paint(seed_value: int) -> None:  # returns once the painting of that seed is on the page
        seed.fill(str(seed_value))
        seed.press("Enter")
        page.get_by_text(f"painting (seed {seed_value}): L2").wait_for(timeout=60_000)

    def upload(path: Path) -> None:
        page.locator("input[type=file]").set_input_files(str(path))
        page.get_by_text("target: your image").wait_for(timeout=60_000)
        wait_until_the_page_is_done(page)

    for index in range(200):
        if index % 4 == 0:
            upload(uploads[index // 4])
        paint(index + 1)
        if index == 39:  # warm-up: 40 paintings, 10 uploads (a 36-megapixel one among them)
            wait_until_the_page_is_done(page)
            warm = resident_bytes(pid)
    wait_until_the_page_is_done(page)
    final = resident_bytes(pid)
    print(f"server memory: {warm / 2**20:.0f} MiB after the warm-up, {final / 2**20:.0f} MiB at the end")
    assert final <= 1.10 * warm, f"the server grew from {warm / 2**20:.0f} MiB to {final / 2**20:.0f} MiB"
