"""The ``spiral`` command as a newcomer runs it, in a separate process."""

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from envs import Program

# The console script installed beside this interpreter (the virtualenv's bin/), else on PATH.
SPIRAL = shutil.which("spiral", path=str(Path(sys.executable).parent)) or shutil.which("spiral")
ROOT = Path(__file__).resolve().parents[1]  # where the README's commands run, relative paths and all


def spiral(*args: str) -> subprocess.CompletedProcess:
    assert SPIRAL, "the spiral console script is not installed (pip install -e .)"
    return subprocess.run([SPIRAL, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_paint_random_writes_png_gif_json_and_svg(tmp_path):
    result = spiral("paint-random", "--out", str(tmp_path), "--seed", "4", "--steps", "10", "--scale", "2")
    assert result.returncode == 0, result.stderr
    png = np.asarray(Image.open(tmp_path / "painting.png"))
    assert png.shape == (128, 128, 3) and (png != 255).any()
    program = Program.load(tmp_path / "painting.json")
    assert len(program.strokes) == 10
    assert (program.render(scale=2) == png).all()
    with Image.open(tmp_path / "painting.gif") as gif:
        # Pillow merges the identical frames of pen-up moves, adding up their durations.
        painted = sum(stroke.pen_down for stroke in program.strokes)
        assert painted + 1 >= gif.n_frames > 1 and gif.info["loop"] == 0
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
        assert sum(durations) == 10 * 200 + 1500
        last_frame = np.asarray(gif.convert("RGB"), np.float32)  # palette quantised: close, not equal
        assert np.abs(last_frame - png).mean() < 4
    svg = ElementTree.parse(tmp_path / "painting.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"


def test_the_same_seed_paints_the_same_picture(tmp_path):
    for folder in ("a", "b"):
        assert spiral("paint-random", "--out", str(tmp_path / folder), "--seed", "9").returncode == 0
    first = json.loads((tmp_path / "a" / "painting.json").read_text())
    assert first == json.loads((tmp_path / "b" / "painting.json").read_text())


def test_replay_renders_a_program_at_another_resolution(tmp_path):
    spiral("paint-random", "--out", str(tmp_path), "--steps", "5", "--canvas-size", "32")
    result = spiral("replay", str(tmp_path / "painting.json"), "--out", str(tmp_path / "big"), "--scale", "8")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "big" / "painting.png").size == (256, 256)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["paint-random", "--brush", "classic/nope", "--out", "{tmp}"], "Unknown brush 'classic/nope'"),
        (["paint-random", "--scale", "0", "--out", "{tmp}"], "must be > 0"),
        (["replay", "/nonexistent/painting.json", "--out", "{tmp}"], "error: No such file or directory: /nonexistent/painting.json"),
        (["paint", "--target", "{tmp}/missing.png", "--out", "{tmp}"], "error: No such file or directory: {tmp}/missing.png"),
        (["train", "--preset", "mnist-recn", "--runs-dir", "{tmp}"], "No preset 'mnist-recn'"),
        (["train", "--preset", "smoke", "training.lrr=1", "--runs-dir", "{tmp}"], "training.lrr"),
        (["paint", "--agent", "/nonexistent/agent", "--out", "{tmp}"], "No agent folder"),
        (["paint-random", "--out", "{tmp}/painting.png"], "not a .png file: try --out "),
        (["replay", "{tmp}/p.json", "--out", "{tmp}/big.GIF"], "not a .GIF file"),
        (["gallery", "--agent", "agents/mnist-pen", "--out", "{tmp}/grid.png"], "not a .png file"),
        (["paint", "--out", "/dev/null"], "/dev/null is not a folder; --out names the folder"),
        (["paint", "--agent", "agents/mnist-pen", "--out", "{tmp}"], "agents/mnist-pen reconstructs a target: pass --target"),
        (["paint", "--agent", "agents/mnist-pen-gen", "--target", "docs/digit.png", "--out", "{tmp}"],
         "agents/mnist-pen-gen paints from scratch and takes no --target"),
        (["train", "--resume", "{tmp}", "--pbt", "2"], "so --pbt cannot change it"),
        (["train", "--resume", "{tmp}", "--preset", "smoke"], "so --preset cannot change it"),
        (["train", "--resume", "{tmp}"], "is not a run folder: it has no experiment.json"),
        (["export", "{tmp}", "--out", "{tmp}/agent"], "is not a run folder"),
        (["train", "--pbt", "2", "--name", "x", "--runs-dir", "{tmp}"], "leave out --name"),
        (["train", "--preset", "smoke", "--name", "../escaped", "--runs-dir", "{tmp}/runs"], "must be a plain name"),
        (["replay", "docs/painting.json", "--name", "../escaped", "--out", "{tmp}"], "must be a plain name"),
    ],
)
def test_bad_input_gives_a_one_line_error(tmp_path, args, message):
    result = spiral(*(arg.format(tmp=tmp_path) for arg in args))
    message = message.format(tmp=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_replay_refuses_a_file_that_is_not_a_program(tmp_path):
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": "world"}')
    result = spiral("replay", str(bogus), "--out", str(tmp_path))
    assert result.returncode == 2 and "Not a spiral painting program" in result.stderr


def test_brushes_lists_the_collection():
    result = spiral("brushes")
    assert result.returncode == 0 and "classic/dry_brush" in result.stdout.split()
