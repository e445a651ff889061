"""Every invalid action, program or installation is refused with a message that names it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from envs import InvalidActionError, PaintEnv, Program, Stroke
from tests.conftest import action


@pytest.mark.parametrize(
    ("component", "value", "valid"),
    [
        ("flag", 2, r"0\.\.1 \(0 moves the pen, 1 paints\)"),
        ("end", 1024, r"0\.\.1023 \(a cell of the 32x32 grid, row-major\)"),
        ("control", -1, r"0\.\.1023"),
        ("size", 6, r"0\.\.5 \(an index into brush_sizes"),
        ("pressure", 10, r"0\.\.9 \(a level of 10 over 0\.1\.\.1\.0\)"),
        ("red", 20, r"0\.\.19"),
        ("green", 99, r"0\.\.19"),
        ("blue", -5, r"0\.\.19"),
    ],
)
def test_an_out_of_range_component_is_named_with_its_range(env, component, value, valid):
    bad = action(env)
    bad[env.codec.index[component]] = value
    with pytest.raises(InvalidActionError, match=rf"'{component}' = {value}: valid values are {valid}"):
        env.step(bad)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(7, np.int64), r"shape \(8,\).*got shape \(7,\)"),
        (np.zeros((2, 8), np.int64), r"got shape \(2, 8\)"),
        (np.array([1, 5, 5, 0, 0, 0, 0, np.nan]), r"'blue' = nan"),
        (np.array([1, 5, 5, 0, 0.5, 0, 0, 0]), r"'pressure' = 0.5"),
        (np.array([1, 5, 5, 0, 0, np.inf, 0, 0]), r"'red' = inf"),
        (np.array(["a"] * 8), "dtype <U1"),
        ([1, 2], r"shape \(8,\)"),
        (None, r"got shape \(\)"),
    ],
)
def test_malformed_actions_are_refused(env, bad, message):
    with pytest.raises(InvalidActionError, match=message):
        env.step(bad)


def test_a_refused_action_changes_nothing(env):
    env.step(action(env, flag=1, end=100, control=200, size=2))
    canvas, strokes = env._canvas.copy(), list(env.program.strokes)
    with pytest.raises(InvalidActionError):
        env.step(action(env, flag=1, end=5000))
    assert (env._canvas == canvas).all() and env.program.strokes == strokes


def test_integral_floats_and_lists_are_accepted(env):
    observation, *_ = env.step([1.0, 10.0, 20.0, 1.0, 9.0, 19.0, 0.0, 0.0])
    assert observation["prev_action"].tolist() == [1, 10, 20, 1, 9, 19, 0, 0]


def good_program() -> dict:
    stroke = Stroke((1.0, 2.0), (3.0, 4.0), (5.0, 6.0), True, 2.0, 0.5, (0.1, 0.2, 0.3))
    return Program(16, 16, [stroke]).to_dict()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("format"), "Not a spiral painting program"),
        (lambda p: p.update(version=99), "Unsupported spiral painting program version 99"),
        (lambda p: p.pop("width"), "Malformed spiral program"),
        (lambda p: p.update(width=-3), "Malformed spiral program: size -3x16"),
        (lambda p: p.update(background=[0, 0, 300]), "background"),
        (lambda p: p["strokes"][0].pop("end"), r"missing \['end'\]"),
        (lambda p: p["strokes"][0].update(size=0), "size"),
        (lambda p: p["strokes"][0].update(pressure=1.5), "pressure"),
        (lambda p: p["strokes"][0].update(color=[2, 0, 0]), "color"),
        (lambda p: p["strokes"][0].update(start=["x", 1]), "Malformed stroke"),
        (lambda p: p["strokes"][0].update(start=[float("nan"), 1]), "finite"),
        (lambda p: p["strokes"][0].update(pen_down="yes"), "pen_down"),
        (lambda p: p.update(strokes=[7]), "Not a stroke"),
    ],
)
def test_foreign_or_corrupt_programs_are_refused(mutate, message):
    data = good_program()
    mutate(data)
    with pytest.raises(ValueError, match=message):
        Program.from_json(json.dumps(data))


def test_text_that_is_not_json_is_refused():
    with pytest.raises(ValueError, match="Not a spiral painting program: the text is not valid JSON"):
        Program.from_json("{'format': ")
    with pytest.raises(ValueError, match="Not a spiral painting program"):
        Program.from_json("[1, 2, 3]")


def run_python(code: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ | environment, timeout=60
    )


def test_a_missing_libmypaint_says_what_to_install():
    result = run_python("import envs; envs.PaintEnv()", SPIRAL_LIBMYPAINT="/nonexistent/libmypaint.so")
    assert result.returncode != 0
    assert "MissingLibMyPaintError" in result.stderr
    assert "apt-get install libmypaint-1.5-1 mypaint-brushes" in result.stderr
    assert "conda install -c conda-forge libmypaint" in result.stderr


def test_a_missing_brush_collection_says_what_to_install(tmp_path):
    result = run_python("import envs; envs.PaintEnv()", SPIRAL_BRUSH_DIR=str(tmp_path))
    assert result.returncode != 0 and "holds no <group>/<name>.myb brush files" in result.stderr


def test_a_brush_file_libmypaint_cannot_parse_is_refused(tmp_path):
    broken = tmp_path / "broken.myb"
    broken.write_text('{"version": 3, "settings": ')
    with pytest.raises(ValueError, match="could not parse the brush file"):
        PaintEnv(brush=str(broken))
