"""Sizes libmypaint would die on are refused in Python; its printf chatter never reaches output.

Everything runs the real libmypaint. What could abort the process (a surface that overflows
libmypaint's 32-bit arithmetic, a point past its 1e8-pixel assert) runs in a subprocess, so a
regression fails one test instead of killing the test run.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import envs.libmypaint
from envs import MAX_SURFACE_PIXELS, CanvasTooLargeError, PaintConfig, PaintEnv, Painter, Program, Stroke
from envs.libmypaint import Surface, load_library, quiet_stdout
from envs.limits import SurfaceAllocationError, surface_size
from spiral import cli
from tests.test_cli import spiral

ROOT = Path(__file__).resolve().parent.parent
LIMIT = f"{MAX_SURFACE_PIXELS:,} pixels"  # how every refusal names the limit
CHATTER = "Time is running backwards"

# A stroke on which libmypaint 1.6 prints "Time is running backwards!" (its 25th event; found by
# painting random strokes of the mnist-l2 agent's action space, as `spiral eval`'s search does).
BACKWARDS = {"start": [54.0, 30.0], "control": [62.0, 18.0], "end": [34.0, 2.0], "pen_down": True, "size": 2.0,
             "pressure": 1.0, "color": [1.0, 1.0, 1.0]}


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def backwards_program() -> Program:
    return Program(64, 64, [Stroke.from_dict(BACKWARDS)], "classic/dry_brush", (0, 0, 0))


# --- the one pixel budget ---------------------------------------------------------------------

@pytest.mark.parametrize(("width", "height", "scale", "size"), [
    (64, 64, 4.0, (256, 256)),
    (256, 256, 4, (1024, 1024)),      # render_scale 4 at 256 px
    (64, 64, 16.0, (1024, 1024)),     # the app's 1024 px re-render of a 64 px canvas
    (64, 64, 64, (4096, 4096)),       # exactly the limit
    (1, 1, 0.01, (1, 1)),             # never smaller than one pixel
    (3, 5, 2.5, (8, 12)),
])
def test_sizes_within_the_budget_are_accepted(width, height, scale, size):
    assert surface_size(width, height, scale) == size


@pytest.mark.parametrize(("width", "height", "scale", "asked"), [
    (64, 64, 1000, "64000x64000 surface (64x64 at scale 1000) is 4,096,000,000 pixels"),
    (70000, 70000, 1, "70000x70000 surface is 4,902,240,256 pixels"),
    (64, 64, 64.01, "4097x4097 surface"),
    (MAX_SURFACE_PIXELS, 1, 1, f"{MAX_SURFACE_PIXELS}x1 surface is 1,073,741,824 pixels in libmypaint's 64-pixel"),
    (64, 64, 1e308, "64x64 canvas at scale 1e+308 has no finite size"),
])
def test_sizes_over_the_budget_say_the_limit_and_the_size_asked_for(width, height, scale, asked):
    with pytest.raises(CanvasTooLargeError) as error:
        surface_size(width, height, scale)
    assert asked in str(error.value) and LIMIT in str(error.value)
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("scale", [0, -1.0, math.nan, math.inf, -math.inf, True, "2", None])
def test_a_scale_must_be_a_finite_number_above_zero(scale):
    with pytest.raises(ValueError, match="Render scale must be a finite number > 0"):
        surface_size(64, 64, scale)
    with pytest.raises(ValueError, match="Render scale must be a finite number > 0"):
        Painter(64, 64, scale=scale)


@pytest.mark.parametrize(("width", "height"), [(0, 64), (64, -3), (64.0, 64), (True, 64), (math.nan, 64)])
def test_a_size_must_be_positive_ints(width, height):
    with pytest.raises(ValueError, match="Canvas size must be positive ints"):
        surface_size(width, height)


def test_every_way_to_a_surface_goes_through_the_budget(tmp_path):
    with pytest.raises(CanvasTooLargeError, match="render_scale 1000: A 64000x64000 surface"):
        PaintConfig(canvas_size=64, render_scale=1000)
    with pytest.raises(CanvasTooLargeError, match=LIMIT):
        PaintEnv(canvas_size=(8, 300000))  # 2.4 megapixels, but 19.2 in 64-pixel tiles
    with pytest.raises(CanvasTooLargeError, match="64000x64000"):
        Painter(64, 64, scale=1000)
    with pytest.raises(CanvasTooLargeError, match="70000x70000"):
        Surface(70000, 70000)
    with pytest.raises(CanvasTooLargeError, match="64000x64000"):
        backwards_program().render(scale=1000)
    with pytest.raises(CanvasTooLargeError, match="64000x64000"):
        next(backwards_program().frames(scale=1000))
    huge = backwards_program().to_dict() | {"width": 70000, "height": 70000}
    with pytest.raises(CanvasTooLargeError, match="70000x70000"):
        Program.from_dict(huge)
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(huge))
    with pytest.raises(CanvasTooLargeError, match=LIMIT):
        Program.load(path)
    assert PaintConfig(canvas_size=256, render_scale=4).canvas_size == (256, 256)


def test_a_config_with_other_problems_still_names_them_all():
    with pytest.raises(CanvasTooLargeError) as error:
        PaintConfig(canvas_size=64, render_scale=1000, grid_size=0)
    assert "grid_size must be an int >= 1" in str(error.value) and "64000x64000" in str(error.value)
    with pytest.raises(ValueError, match="render_scale must be an int >= 1") as error:
        PaintConfig(render_scale=0)
    assert not isinstance(error.value, CanvasTooLargeError)


def test_a_program_with_an_infinite_size_is_malformed_not_a_crash():
    text = backwards_program().to_json().replace('"width": 64', '"width": 1e400')
    with pytest.raises(ValueError, match="Malformed spiral program"):
        Program.from_json(text)


def test_a_large_render_within_the_budget_paints():
    canvas = backwards_program().render(scale=16)  # the app's 1024 px
    assert canvas.shape == (1024, 1024, 3) and canvas.max() == 255


def test_an_allocation_failure_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(load_library(), "mypaint_fixed_tiled_surface_new", lambda width, height: None)
    with pytest.raises(SurfaceAllocationError, match="Not enough memory for a 256x256 surface") as error:
        Painter(64, 64, scale=4)
    assert isinstance(error.value, CanvasTooLargeError) and isinstance(error.value, MemoryError)


# --- points libmypaint asserts on ---------------------------------------------------------------

def test_a_point_past_libmypaints_assert_is_refused_not_an_abort():
    far = BACKWARDS | {"start": [5e8, 10.0]}
    with pytest.raises(ValueError, match="within 1e\\+07 pixels of the canvas origin"):
        Stroke.from_dict(far)
    # Built directly, the stroke skips from_dict's check: the painter refuses it before libmypaint.
    result = run_python(
        "from envs import Program, Stroke\n"
        "stroke = Stroke((5e8, 10.0), (10.0, 10.0), (20.0, 20.0), True, 2.0, 1.0, (0, 0, 0))\n"
        "Program(64, 64, [stroke]).render()\n"
    )
    assert result.returncode == 1, result.stderr  # a Python exception, not SIGABRT (-6)
    assert "ValueError: Stroke (500000000.0, 10.0)" in result.stderr and "reaches too far" in result.stderr
    with pytest.raises(ValueError, match="at render scale 1000 strokes must stay within 10000 canvas"):
        Painter(1, 1, scale=1000).draw(Stroke((10001.0, 1.0), (1.0, 1.0), (2.0, 2.0), True, 1.0, 1.0, (0, 0, 0)))


# --- libmypaint's printf ------------------------------------------------------------------------

def test_libmypaint_really_prints_on_that_stroke_without_the_guard():
    """The control for the tests below: with C's stdout left alone, the chatter does appear."""
    result = run_python(
        "import envs.libmypaint\n"
        "from envs import Program, Stroke\n"
        "envs.libmypaint._stdout_swap = lambda: None\n"
        f"Program(64, 64, [Stroke.from_dict({BACKWARDS!r})], 'classic/dry_brush', (0, 0, 0)).render()\n"
    )
    assert result.returncode == 0, result.stderr
    assert CHATTER in result.stdout


def test_replaying_that_stroke_prints_nothing_but_the_files(tmp_path):
    path = tmp_path / "backwards.json"
    backwards_program().save(path)
    result = spiral("replay", str(path), "--out", str(tmp_path / "out"), "--scale", "1")
    assert result.returncode == 0, result.stderr
    assert CHATTER not in result.stdout and CHATTER not in result.stderr
    assert result.stdout.split()[::2] == ["png", "gif", "json", "svg"]


def test_the_guard_changes_no_pixel_and_puts_stdout_back(monkeypatch):
    swap = envs.libmypaint._stdout_swap()
    assert swap is not None, "C stdout cannot be redirected on this platform"
    before = swap[0].value
    quiet = backwards_program().render()
    assert swap[0].value == before
    with quiet_stdout:
        with quiet_stdout:
            assert swap[0].value != before
        assert swap[0].value != before
    assert swap[0].value == before
    monkeypatch.setattr(envs.libmypaint, "_stdout_swap", lambda: None)
    np.testing.assert_array_equal(backwards_program().render(), quiet)


# --- the command line ---------------------------------------------------------------------------

def assert_refused(result: subprocess.CompletedProcess, command: str, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)  # >= 0: no signal killed it
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"spiral {command}: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_replay_at_scale_1000_exits_2_with_the_limit_and_the_size(tmp_path):
    result = spiral("replay", str(ROOT / "docs" / "painting.json"), "--out", str(tmp_path / "out"), "--scale", "1000")
    assert_refused(result, "replay", "64000x64000", LIMIT, "envs.MAX_SURFACE_PIXELS")
    assert not (tmp_path / "out").exists()


def test_replay_of_a_70000_pixel_program_exits_2_with_the_limit_and_the_size(tmp_path):
    program = json.loads((ROOT / "docs" / "painting.json").read_text()) | {"width": 70000, "height": 70000}
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(program))
    assert_refused(spiral("replay", str(path), "--out", str(tmp_path / "out")), "replay", "70000x70000", LIMIT)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["paint-random", "--scale", "1000"],
    ["paint-random", "--canvas-size", "70000"],
    ["paint", "--scale", "1000"],
])
def test_painting_commands_refuse_sizes_over_the_budget(tmp_path, args):
    result = spiral(*args, "--out", str(tmp_path / "out"))
    assert_refused(result, args[0], LIMIT)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scale", ["nan", "inf", "-1"])
def test_a_scale_that_is_not_a_finite_positive_number_is_a_usage_error(tmp_path, scale):
    result = spiral("replay", str(ROOT / "docs" / "painting.json"), "--out", str(tmp_path), "--scale", scale)
    assert result.returncode == 2 and "--scale: must be > 0 and finite" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("error", "message"), [
    (ValueError("bad value\nsecond line"), "spiral brushes: error: bad value second line"),
    (FileNotFoundError("no such folder"), "spiral brushes: error: no such folder"),
    (ImportError("no module named x"), "spiral brushes: error: no module named x"),
    (MemoryError(), "spiral brushes: error: out of memory"),
    (CanvasTooLargeError("too large"), "spiral brushes: error: too large"),
])
def test_command_errors_exit_2_with_one_line(monkeypatch, capsys, error, message):
    def fail():
        raise error

    monkeypatch.setattr(cli, "available_brushes", fail)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["brushes"])
    assert exit_.value.code == 2 and str(exit_.value) == message
    assert capsys.readouterr().err == message + "\n"


def test_keyboard_interrupt_is_left_to_python(monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "available_brushes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["brushes"])


# --- the app ------------------------------------------------------------------------------------

def test_the_app_says_when_a_re_render_is_over_the_budget(monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import envs.limits

    st.cache_data.clear()  # a re-render cached by another test would skip the check
    monkeypatch.setattr(envs.limits, "MAX_SURFACE_PIXELS", 300 * 300)  # 256 px fits, 512 px does not
    app = AppTest.from_file(str(ROOT / "app" / "spiral_app.py"), default_timeout=180)
    app.run()
    assert not app.exception and not app.error
    app.select_slider(key="main-size").set_value(512).run()
    assert not app.exception, app.exception
    assert any("Cannot re-render at 512 px: A 512x512 surface" in error.value and "90,000 pixels" in error.value
               for error in app.error)
    assert [button.label for button in app.download_button] == ["GIF", "JSON", "SVG"]
    st.cache_data.clear()
