"""The app's Training page (AppTest) and what it reads from a run folder (``spiral.runs``, ``spiral.curves``).

The page following a run that really trains, in a real browser, is in tests/test_browser.py.
"""

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from tensorboardX import SummaryWriter

from spiral.curves import read_logs
from spiral.experiment import Experiment
from spiral.manifest import TrainingRecord
from spiral.runs import LOCK_FILE, list_runs, run_holder
from tests.conftest import export_untrained

APP = str(Path(__file__).resolve().parent.parent / "app" / "spiral_app.py")


def write_run(folder: Path, steps: tuple[int, ...] = (100, 200), grid_value: int = 0) -> Path:
    """A run folder as the trainer leaves it: experiment.json, scalars and painting grids in tb/, best/ exported."""
    folder.mkdir(parents=True)
    (folder / "experiment.json").write_text(Experiment.from_preset("smoke").to_json())
    writer = SummaryWriter(str(folder / "tb"))
    for step in steps:
        writer.add_scalar("eval/test_l2", 0.2 - step / 10_000, step)
        writer.add_scalar("eval/blank_l2", 0.25, step)
        writer.add_scalar("policy/entropy_flag", 0.5, step)
        writer.add_image("paintings", np.full((16, 32, 3), grid_value + step % 200, np.uint8), step, dataformats="HWC")
    writer.close()
    export_untrained(folder / "best", "smoke", training=TrainingRecord(iterations=2, env_steps=steps[-1]))
    return folder


def start_training_page(runs: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("SPIRAL_RUNS_DIR", str(runs))
    app = AppTest.from_file(APP, default_timeout=180)
    app.run()
    app.switch_page("training.py").run()
    assert not app.exception, app.exception
    return app


def test_runs_are_listed_newest_first_and_a_folder_without_runs_gives_none(tmp_path):
    old, new = write_run(tmp_path / "old"), write_run(tmp_path / "new")
    os.utime(old / "experiment.json", (1_000_000, 1_000_000))
    (tmp_path / "not-a-run").mkdir()
    assert list_runs(tmp_path) == [new, old]
    assert list_runs(tmp_path / "missing") == []


def test_the_newest_painting_grid_is_read_from_the_event_files(tmp_path):
    run = write_run(tmp_path / "run", steps=(100, 200, 300), grid_value=10)
    step, png = read_logs(run).grid
    assert step == 300
    assert np.asarray(Image.open(io.BytesIO(png))).max() == 10 + 300 % 200
    empty = tmp_path / "empty" / "tb"
    SummaryWriter(str(empty)).close()
    assert read_logs(empty.parent).grid is None


def test_the_holder_of_a_run_is_read_from_its_lock_file_and_a_dead_holder_is_not_one(tmp_path):
    run = write_run(tmp_path / "run")
    assert run_holder(run) is None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-12-01T10:00:00", "command": "spiral"}
    (run / LOCK_FILE).write_text(json.dumps(record))
    assert run_holder(run) == record
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / LOCK_FILE).write_text(json.dumps(record | {"pid": int(finished.stdout)}))
    assert run_holder(run) is None
    (run / LOCK_FILE).write_text("not json")
    assert run_holder(run) is None


def test_the_training_page_says_how_to_start_when_there_is_no_run(tmp_path, monkeypatch):
    app = start_training_page(tmp_path, monkeypatch)
    assert app.subheader[0].value == "Training"
    assert "spiral train --preset smoke" in app.info[0].value
    assert str(tmp_path) not in app.info[0].value  # no server path on the page


def test_the_training_page_shows_a_run_and_opens_its_export_on_the_paint_page(tmp_path, monkeypatch):
    write_run(tmp_path / "older")
    os.utime(tmp_path / "older" / "experiment.json", (1_000_000, 1_000_000))
    write_run(tmp_path / "smoke-1", steps=(100, 200, 300))
    app = start_training_page(tmp_path, monkeypatch)
    picker = app.selectbox(key="run")
    assert picker.options == ["smoke-1", "older"] and picker.value.name == "smoke-1"
    assert app.caption[0].value.startswith("smoke-1: stopped; last written")
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics == {"env steps": "300", "held-out L2": "0.1700", "blank canvas L2": "0.2500"}
    captions = [caption for image in app.image for caption in image.captions]
    assert any(caption.startswith("curves from the run's TensorBoard files") for caption in captions), captions
    assert any(caption.startswith("newest paintings, at 300 env steps") for caption in captions), captions

    app.button(key="paint-best").click().run()
    assert not app.exception, app.exception
    assert app.sidebar.selectbox(key="agent").value == "smoke-1/best"
    assert [header.value for header in app.subheader] == ["Reconstruct", "Replay"]  # the smoke agent reconstructs


def test_a_run_being_trained_is_marked_as_such(tmp_path, monkeypatch):
    run = write_run(tmp_path / "smoke-1")
    (run / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                             "since": "2026-12-01T10:00:00", "command": "spiral train"}))
    app = start_training_page(tmp_path, monkeypatch)
    assert "training now, since 2026-12-01T10:00:00" in app.caption[0].value


@pytest.mark.parametrize("logs", ["none", "an empty file", "only scalars spiral does not plot"])
def test_a_run_with_no_curves_yet_is_shown_without_an_error(tmp_path, monkeypatch, logs):
    run = tmp_path / "smoke-1"
    run.mkdir()
    (run / "experiment.json").write_text(Experiment.from_preset("smoke").to_json())
    if logs != "none":
        writer = SummaryWriter(str(run / "tb"))
        if logs == "only scalars spiral does not plot":
            writer.add_scalar("custom/thing", 1.0, 10)
        writer.close()
    app = start_training_page(tmp_path, monkeypatch)
    assert not app.error
    assert any("No curves yet" in info.value for info in app.info)
    assert any("No export yet" in caption.value for caption in app.caption)
