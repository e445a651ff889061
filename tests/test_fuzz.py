"""Property-based fuzzing of every input door: random and hostile input is refused cleanly, never crashes.

Each surface gets generated input that is malformed, hostile or merely odd, and one of two outcomes
is allowed: a clean refusal (a ValueError, whose message says what is wrong) or a correct result.
From the command line a refusal is one ``spiral <command>: error: ...`` line and exit status 2:
never a traceback, never a death by a signal (libmypaint's ``assert``s abort the process).

- painting programs (``Program.from_dict`` / ``from_json`` / ``load``, ``spiral replay``);
- presets and ``section.field=value`` overrides (``Experiment.from_preset``, ``spiral train``, which must
  refuse them before Ray is even imported);
- agent folders (``agent.json`` fields, ``policy.pt`` shapes, truncated files, pickles: ``load_agent``,
  ``spiral eval``), a malicious pickle never runs;
- action vectors (``PaintEnv.step``);
- images (``spiral.images.open_image``, the path of ``spiral paint --target`` and of the app's upload,
  then ``Agent.prepare_target``; ``spiral paint --target``).

Reproducible and bounded for CI (about 2 minutes on two busy cores): every test is derandomized (the
same examples on every run, until the test's code changes), keeps no example database and writes
Hypothesis' cache to a temporary folder, not the repository; subprocess cases are not shrunk.
``SPIRAL_FUZZ_SCALE=20`` multiplies the number of examples for a longer hunt. Subprocesses run the
installed console script under a 4 GiB address-space limit, so an input that slips past a size check
fails the test with a MemoryError instead of exhausting the machine. Inputs the fuzzer once found
are kept as explicit examples, so they are tried on every run whatever the generator draws.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import tomllib
import zlib
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from envs import ActionCodec, InvalidActionError, PaintConfig, PaintEnv, Program, available_brushes
from spiral.agent import load_agent, untrained_agent, write_agent
from spiral.experiment import PRESET_DIR, SECTIONS, DataSettings, Experiment
from spiral.images import MAX_PIXELS, open_image
from spiral.network_config import NetworkConfig
from tests.conftest import TINY, _Exploit

BRUSHES = available_brushes()

# Every test here: the same examples on every run, no example database, no deadline (CI is busy).
FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                       HealthCheck.large_base_example, HealthCheck.function_scoped_fixture])


# More examples for a longer hunt than CI's, e.g. SPIRAL_FUZZ_SCALE=20 pytest tests/test_fuzz.py
SCALE = float(os.environ.get("SPIRAL_FUZZ_SCALE", "1"))


def fuzz(examples: int, shrink: bool = True) -> settings:
    """``examples`` generated cases; without shrinking for subprocess cases, so a failure stays cheap in CI."""
    phases = list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate]
    return settings(FUZZ, max_examples=max(1, round(examples * SCALE)), phases=phases)


# Hypothesis caches the constants of the code under test in ./.hypothesis/, from the moment pytest has
# collected the tests: point it at a temporary folder (removed when the run ends), not the repository.
_HYPOTHESIS_HOME = tempfile.TemporaryDirectory(prefix="spiral-fuzz-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME.name)


@contextlib.contextmanager
def scratch(tmp_path: Path):
    """A fresh folder per example (tmp_path is shared by all examples of a test), removed afterwards."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        yield Path(folder)


def refused_with_a_message(error: ValueError) -> str:
    message = str(error)
    assert message.strip(), f"{type(error).__name__} without a message"
    return message


# --- hostile values ---------------------------------------------------------------------------------------

NASTY_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1e-300, 0.5, 1.5, 3.7, -2.5, 1e300,
                1.7976931348623157e308, -1e308]
NASTY_INTS = [0, 1, -1, 2, 3, 255, 256, -256, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63, 2**64, -2**63, 10**12,
              10**100]
NASTY_STRINGS = ["", " ", "a", "0", "1e3", "nan", "NaN", "Infinity", "true", "null", "classic/pen", "classic/nope",
                 "../../../../etc/passwd", "/etc/passwd", "/dev/zero", "x" * 300, "\x00", "a\nb", "\u202e", "💥"]

scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(NASTY_INTS), st.integers(), st.sampled_from(NASTY_FLOATS), st.floats(),
    st.sampled_from(NASTY_STRINGS), st.text(max_size=12),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=8)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def paths(document, prefix=()) -> list[tuple]:
    """Every place in a JSON document: keys of objects and indices of arrays, at any depth."""
    found = []
    items = document.items() if isinstance(document, dict) else enumerate(document) if isinstance(document, list) \
        else ()
    for key, value in items:
        found.append((*prefix, key))
        found += paths(value, (*prefix, key))
    return found


@st.composite
def mutated(draw, document, extra_keys=("extra", "colour", "format", "version", "")):
    """``document`` with one to three places replaced by hostile values, deleted, or given unknown keys."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        places = paths(document)
        if not places or not isinstance(document, dict):
            break
        *parent_path, key = draw(st.sampled_from(places))
        parent = document
        for step in parent_path:
            parent = parent[step]
        operation = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if operation == "replace":
            parent[key] = draw(json_values)
        elif operation == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(extra_keys) | st.text(max_size=8))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return document


def dumps(document) -> str:
    """JSON as Python writes it, NaN and Infinity included (Python reads them back)."""
    return json.dumps(document)


# --- painting programs ------------------------------------------------------------------------------------

points = st.lists(st.floats(-5, 53), min_size=2, max_size=2)
strokes = st.fixed_dictionaries({
    "start": points, "control": points, "end": points, "pen_down": st.booleans(), "size": st.floats(0.5, 8),
    "pressure": st.floats(0.1, 1), "color": st.lists(st.floats(0, 1), min_size=3, max_size=3),
})
programs = st.fixed_dictionaries({
    "format": st.just("spiral-program"), "version": st.just(1), "width": st.integers(1, 48),
    "height": st.integers(1, 48), "brush": st.sampled_from(["classic/dry_brush", "classic/pen", "classic/charcoal"]),
    "background": st.lists(st.integers(0, 255), min_size=3, max_size=3), "points_per_stroke": st.integers(2, 60),
    "strokes": st.lists(strokes, max_size=4),
})
HEADER = '{"format": "spiral-program", "version": 1, '
STROKE = {"start": [1, 1], "control": [4, 4], "end": [6, 2], "pen_down": True, "size": 1, "pressure": 1,
          "color": [0, 0, 0]}


def program_text(**changes) -> str:
    """A program's JSON: an 8x8 canvas with one stroke, but for ``changes``."""
    return dumps({"format": "spiral-program", "version": 1, "width": 8, "height": 8, "brush": "classic/pen",
                  "background": [255, 255, 255], "points_per_stroke": 8, "strokes": [STROKE]} | changes)


BIG_CANVAS = program_text(width=64000, height=64000)
DEEP_PROGRAM = HEADER + '"width": ' + deep(5000) + "}"
program_texts = st.one_of(
    programs.flatmap(mutated).map(dumps),
    programs.flatmap(mutated).map(dumps),
    programs.map(dumps).flatmap(lambda text: st.integers(0, len(text)).map(lambda cut: text[:cut])),  # truncated
    json_values.map(dumps),
    st.text(max_size=200),
    st.sampled_from([
        "", "null", "[]", "NaN", HEADER + '"width": 1e999, "height": 1}', HEADER + '"width": -Infinity}',
        DEEP_PROGRAM, deep(5000), '{"a": ' * 5000 + "1" + "}" * 5000, BIG_CANVAS,
    ]),
)


def check_program(build) -> Program | None:
    """``build()`` either refuses with a ValueError or gives a program that is valid through and through."""
    try:
        program = build()
    except ValueError as error:
        refused_with_a_message(error)
        return None
    for side in (program.width, program.height):
        assert type(side) is int and side >= 1
    program.surface_size()  # within the pixel budget, or CanvasTooLargeError: it should have been refused
    assert type(program.points_per_stroke) is int and isinstance(program.brush, str)
    assert len(program.background) == 3 and all(type(c) is int and 0 <= c <= 255 for c in program.background)
    for stroke in program.strokes:
        assert all(math.isfinite(v) for point in (stroke.start, stroke.control, stroke.end) for v in point)
        assert math.isfinite(stroke.size) and stroke.size > 0 and 0 < stroke.pressure <= 1
        assert len(stroke.color) == 3 and all(0 <= c <= 1 for c in stroke.color) and type(stroke.pen_down) is bool
    assert Program.from_json(program.to_json()) == program  # what is accepted is saved and read back as it was
    return program


@fuzz(500)
@given(text=program_texts)
@example(text=DEEP_PROGRAM)  # json recurses once per bracket
@example(text=program_text(brush="x" * 300))  # a name too long for a file
def test_program_json_is_a_valid_program_or_refused_with_a_message(text):
    program = check_program(lambda: Program.from_json(text))
    if program is None:
        return
    assert check_program(lambda: Program.from_dict(json.loads(text))) == program
    if program.points_per_stroke <= 200 and len(program.strokes) <= 6 and program.width * program.height <= 64**2:
        try:
            canvas = program.render()
        except ValueError as error:  # an unknown brush, fewer than 2 points a stroke...
            refused_with_a_message(error)
        else:
            assert canvas.shape == (program.height, program.width, 3) and canvas.dtype == np.uint8


@fuzz(100)
@given(data=st.one_of(program_texts.map(lambda text: text.encode("utf-8", "surrogatepass")), st.binary(max_size=300),
                      st.just(b"\xff\xfe{}"), st.just(b"\x89PNG\r\n\x1a\n")))
def test_program_files_are_valid_programs_or_refused_with_a_message(tmp_path, data):
    with scratch(tmp_path) as folder:
        path = folder / "painting.json"
        path.write_bytes(data)
        check_program(lambda: Program.load(path))


# --- the command line, in subprocesses --------------------------------------------------------------------

SPIRAL = shutil.which("spiral", path=str(Path(sys.executable).parent)) or shutil.which("spiral")
MEMORY_LIMIT = 4 * 2**30  # bytes of address space: a size check that fails fails the test, not the machine
LIMITED = ("import os, resource, sys\n"
           f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
           "os.execv(sys.argv[1], sys.argv[1:])\n")
CLI_TIMEOUT = 120
USAGE_ERROR = 2  # argparse's status for bad arguments, and main()'s for refused input


def spiral(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it, under the memory limit."""
    assert SPIRAL, "the spiral console script is not installed (pip install -e .)"
    limited = [sys.executable, "-c", LIMITED, SPIRAL, *args]
    return subprocess.run(limited, capture_output=True, text=True, errors="replace", timeout=CLI_TIMEOUT,
                          env=(os.environ | {"OMP_NUM_THREADS": "1"} | (env or {})))


def check_cli(result: subprocess.CompletedProcess, command: str) -> str | None:
    """The run succeeded, or refused with one ``spiral <command>: error:`` line and status 2; the message, if any."""
    shown = f"exit status {result.returncode}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode >= 0, f"spiral {command} was killed by signal {-result.returncode}\n{shown}"
    assert "Traceback" not in result.stderr, shown
    if result.returncode == 0:
        return None
    assert result.returncode == USAGE_ERROR, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # argparse reports arguments no subcommand takes as the top-level parser: "spiral: error: unrecognized ..."
    assert lines and re.match(rf"spiral( {re.escape(command)})?: error: \S", lines[-1]), shown
    assert sum(bool(re.match(r"spiral( \S+)?: error:", line)) for line in lines) == 1, shown
    # Refused by a check, not by running out of the test's memory limit (which a user's machine may not have).
    assert not re.search(r"allocate|out of memory", lines[-1], re.IGNORECASE), shown
    return lines[-1]


SCALES = ["1", "2.5", "0", "-1", "nan", "inf", "-inf", "1e308", "1e-308", "1e3", "abc", "", "0x10", "1_0"]
SEEDS = ["0", "7", "-1", "-5", "9223372036854775807", "9223372036854775808", "18446744073709551616", "1.5", "abc"]
CLI_STRINGS = [s for s in NASTY_STRINGS if "\x00" not in s]  # argv cannot carry NUL
names = st.text(st.characters(codec="ascii", categories=("L", "N"), include_characters="_- ."), max_size=12)
replay_options = st.lists(st.one_of(
    st.tuples(st.just("--scale"), st.sampled_from(SCALES)),
    st.tuples(st.just("--brush"), st.sampled_from(BRUSHES[:3] + CLI_STRINGS)),
    st.tuples(st.just("--name"), names),  # "." and ".." are refused: a name may not leave --out
), max_size=3).map(lambda pairs: [part for pair in pairs for part in pair])


@fuzz(40, shrink=False)
@given(text=program_texts, options=replay_options)
@example(text=BIG_CANVAS, options=["--scale", "1"])  # libmypaint aborted the process (an assert)
@example(text=program_text(strokes=[STROKE | {"start": [1e300, -1e300], "end": [-1e300, 1e300]}]), options=[])
@example(text=DEEP_PROGRAM, options=[])
@example(text=program_text(points_per_stroke=10**9), options=["--scale", "1"])  # 8 GB of points a stroke
def test_replay_command_renders_or_refuses_in_one_line(tmp_path, text, options):
    with scratch(tmp_path) as folder:
        path = folder / "painting.json"
        path.write_text(text, errors="surrogatepass")
        result = spiral("replay", str(path), "--out", str(folder / "out"), *options)
        if check_cli(result, "replay") is None:
            name = options[options.index("--name") + 1] if "--name" in options else "painting"
            assert (folder / "out" / f"{name}.png").is_file()


@pytest.mark.parametrize("args", [
    ["--seed", "-1"],  # gymnasium refused it with a traceback
    ["--seed", "18446744073709551616"],
    ["--canvas-size", "100000"],
    ["--grid", "100000"],
    ["--steps", "0"],
    ["--brush", "x" * 300],
    ["--brush", "../../../../etc/passwd"],
    ["--scale", "inf"],
])
def test_paint_random_paints_or_refuses_in_one_line(tmp_path, args):
    result = spiral("paint-random", "--canvas-size", "8", "--grid", "4", "--steps", "2", "--out", str(tmp_path), *args)
    if check_cli(result, "paint-random") is None:
        assert (tmp_path / "painting.png").is_file()


# --- presets and overrides --------------------------------------------------------------------------------

SETTINGS = {"env": [f.name for f in fields(PaintConfig)], "network": [f.name for f in fields(NetworkConfig)]} | {
    name: [f.name for f in fields(kind)] for name, kind in SECTIONS.items()}
SETTING_NAMES = sorted(f"{section}.{name}" for section, names_ in SETTINGS.items() for name in names_)


def toml_value(value) -> str:
    """A TOML literal for a value of ``toml_values``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string, unless a raw DEL makes it invalid
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(key)} = {toml_value(item)}" for key, item in value.items()) + "}"


toml_scalars = st.one_of(st.booleans(), st.sampled_from(NASTY_INTS), st.integers(-2**63, 2**63 - 1),
                         st.sampled_from(NASTY_FLOATS), st.floats(), st.sampled_from(NASTY_STRINGS),
                         st.text(max_size=12))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
value_texts = st.one_of(toml_values.map(toml_value), st.text(max_size=16), st.sampled_from([
    "", "[", "{", "'", '"', "1979-05-27", "07:32:00", "nan", "-inf", "1e999", "0x10", "0o7", "1_000", "True",
    "mnist", "folder:/nonexistent", deep(1500), "{a = " * 1500 + "1" + "}" * 1500,
]))
override_keys = st.one_of(st.sampled_from(SETTING_NAMES), st.sampled_from(SETTING_NAMES), st.just("name"),
                          st.sampled_from(["", ".", "training.", ".lr", "a.b.c.d", "training.lr.x", "env.canvas_size.0",
                                           "nosuch.x", "training", "env", " training . lr "]),
                          st.text(max_size=12))
overrides = st.one_of(st.tuples(override_keys, value_texts).map("=".join), st.text(max_size=16))


@st.composite
def preset_documents(draw) -> dict:
    """A preset as a table: known and unknown sections and settings, hostile values, or a section that is no table."""
    document = {}
    if draw(st.booleans()):
        document["name"] = draw(toml_values)
    for section in draw(st.lists(st.sampled_from([*SETTINGS, "nosuch"]) | st.text(max_size=6), max_size=4,
                                 unique=True)):
        if draw(st.integers(0, 9)) == 0:
            document[section] = draw(toml_scalars)
            continue
        known = SETTINGS.get(section, ["x"])
        keys = draw(st.lists(st.sampled_from(known) | st.text(max_size=6), max_size=4, unique=True))
        document[section] = {key: draw(toml_values) for key in keys}
    return document


def toml_text(document: dict) -> str:
    lines = [f"{json.dumps(key)} = {toml_value(value)}" for key, value in document.items()
             if not isinstance(value, dict)]
    for section, table in document.items():
        if isinstance(table, dict):
            lines += [f"[{json.dumps(section)}]", *(f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


SMOKE = PRESET_DIR / "smoke.toml"
preset_texts = st.one_of(
    preset_documents().map(toml_text),
    preset_documents().map(toml_text),
    st.just(SMOKE.read_text()),
    st.just(SMOKE.read_text()),
    st.text(max_size=120),
    st.just("[training]\nlr = " + deep(1500) + "\n"),
)


def toml_parse(text: str):
    """A value as an override reads it: TOML, or else the bare word."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def culprits(items: list[str]) -> list[str]:
    """The names a refusal of these overrides may give: their keys, the parts of their keys, or themselves."""
    names_ = []
    for item in items:
        key = item.partition("=")[0].strip()
        parts = [part.strip() for part in key.split(".")]
        names_ += [item, repr(item), key, *(part for part in parts if part), *(repr(part) for part in parts)]
    return [name for name in names_ if name]


def lookup(document: dict, key: str):
    for part in key.split("."):
        document = document[part]
    return document


def check_experiment(path: Path, items: list[str]) -> Experiment | None:
    """The preset and the overrides give an experiment that holds what they say, or a ValueError naming the culprit."""
    try:
        experiment = Experiment.from_preset(str(path))
    except ValueError as error:
        message = refused_with_a_message(error)
        assert str(path) in message, message
        return None
    try:
        experiment = Experiment.from_preset(str(path), items)
    except ValueError as error:
        message = refused_with_a_message(error)
        assert any(name in message for name in culprits(items)), f"{items} refused without naming them: {message}"
        return None
    settings_ = experiment.to_dict()
    assert Experiment.from_dict(json.loads(json.dumps(settings_))).to_dict() == settings_
    last = {item.partition("=")[0].strip(): item.partition("=")[2] for item in items}
    for key, text in last.items():
        related = any(other != key and (other.startswith(key + ".") or key.startswith(other + ".")) for other in last)
        if not related:
            assert holds(lookup(settings_, key), toml_parse(text)), f"{key}={text} not in effect: {settings_}"
    return experiment


def holds(actual, expected) -> bool:
    """Whether ``actual`` is ``expected``, or for a table has at least its settings (a section keeps its defaults)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(key in actual and holds(actual[key], value) for key, value in expected.items())
    return actual == expected


@fuzz(400)
@given(text=preset_texts, items=st.lists(overrides, max_size=3))
@example(text=SMOKE.read_text(), items=["training.lr=" + deep(1500)])  # tomllib recurses once per bracket
@example(text="[training]\nlr = " + deep(1500) + "\n", items=[])
@example(text=SMOKE.read_text(), items=["env.canvas_size=100000"])
@example(text=SMOKE.read_text(), items=["network.hidden=100000000"])
def test_presets_and_overrides_give_the_experiment_they_say_or_name_the_culprit(tmp_path, text, items):
    with scratch(tmp_path) as folder:
        path = folder / "preset.toml"
        path.write_text(text)
        check_experiment(path, items)


@fuzz(40)
@given(data=st.binary(max_size=200) | st.sampled_from([b"\xff\xfe[training]", b"\x00" * 10,
                                                      b"[env]\ncanvas_size = 1\x00"]),
       name=st.sampled_from(["preset.toml", "x" * 300 + ".toml", "no-suffix"]))
def test_preset_files_of_any_bytes_or_name_give_an_experiment_or_are_refused(tmp_path, data, name):
    with scratch(tmp_path) as folder:
        path = folder / name
        with contextlib.suppress(OSError):  # a name too long for the file system: a preset that is not there
            path.write_bytes(data)
        try:
            Experiment.from_preset(str(path))
        except ValueError as error:
            refused_with_a_message(error)


@pytest.fixture(scope="module")
def no_ray(tmp_path_factory) -> dict:
    """An environment in which ``import ray`` leaves a marker file and fails: Ray must not be reached."""
    root = tmp_path_factory.mktemp("no-ray")
    (root / "ray").mkdir()
    (root / "ray" / "__init__.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['SPIRAL_FUZZ_RAY_MARKER']).touch()\n"
        "raise ImportError('ray is not available in the fuzz tests')\n")
    return {"PYTHONPATH": str(root), "SPIRAL_FUZZ_RAY_MARKER": str(root / "ray-was-imported")}


cli_overrides = overrides.filter(lambda item: "\x00" not in item and not item.startswith("-"))


@fuzz(12, shrink=False)
@given(text=preset_texts, items=st.lists(cli_overrides, min_size=1, max_size=2))
@example(text=SMOKE.read_text(), items=["training.lr=" + deep(1500)])
@example(text=SMOKE.read_text(), items=["training.lrr=1"])
def test_train_refuses_bad_settings_before_ray_is_imported(tmp_path, no_ray, text, items):
    marker = Path(no_ray["SPIRAL_FUZZ_RAY_MARKER"])
    with scratch(tmp_path) as folder:
        path = folder / "preset.toml"
        path.write_text(text)
        try:
            Experiment.from_preset(str(path), items)
        except ValueError as error:
            expected = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        except Exception:  # noqa: BLE001 - the preset test reports it; here: what the command makes of it
            expected = None
        else:
            return  # valid settings: training would start, no fuzzing matter
        marker.unlink(missing_ok=True)
        result = spiral("train", "--preset", str(path), *items, "--runs-dir", str(folder / "runs"), env=no_ray)
        message = check_cli(result, "train")
        assert message is not None, "bad settings were accepted"
        assert not marker.exists(), f"Ray was imported before the settings were refused: {message}"
        assert expected is None or message.endswith(expected), f"{message!r} is not {expected!r}"
        assert not (folder / "runs").exists() or not any((folder / "runs").iterdir()), "a run folder was started"


# --- agent folders ----------------------------------------------------------------------------------------

SMALL = PaintConfig(canvas_size=16, grid_size=4, episode_length=3, use_color=False, background=(0, 0, 0),
                    fixed_color=(255, 255, 255))


@pytest.fixture(scope="module")
def agent_folder(tmp_path_factory) -> Path:
    agent = untrained_agent(SMALL, conditional=True, network=TINY, data=DataSettings(limit=8))
    return write_agent(tmp_path_factory.mktemp("agent") / "agent", agent.policy.state_dict(), {}, agent.manifest)


FOLDER = object()  # what put() makes of a file: a folder in its place


def put(path: Path, content) -> None:
    """Make ``path`` hold ``content``: bytes, None (no file there) or FOLDER."""
    if path.is_dir():
        path.rmdir()
    path.unlink(missing_ok=True)
    if content is FOLDER:
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)


def saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@st.composite
def agent_damage(draw, folder: Path):
    """One way to damage an agent folder: a function of (the folder, draw) that damages a copy."""
    manifest = json.loads((folder / "agent.json").read_text())
    state = torch.load(folder / "policy.pt", weights_only=True)
    kind = draw(st.sampled_from(["manifest", "manifest", "manifest", "manifest text", "weights bytes", "state"]))
    if kind == "manifest":
        text = dumps(draw(mutated(manifest, extra_keys=("colour", "extra", "format", "version")))).encode()
        return lambda target, _: put(target / "agent.json", text)
    if kind == "manifest text":
        text = dumps(manifest).encode()
        data = draw(st.one_of(
            st.integers(0, len(text) - 1).map(lambda cut: text[:cut]),
            st.binary(max_size=200),
            st.sampled_from([b"\xff\xfe\x00", b"[]", b"null", b'"spiral-agent"', deep(5000).encode(),
                             text.replace(b'"hidden": 32', b'"hidden": NaN'),
                             text.replace(b'"hidden": 32', b'"hidden": 1e999'),
                             text.replace(b'"grid_size": 4', b'"grid_size": 4000')]),
        ))
        return lambda target, _: put(target / "agent.json", data)
    weights = (folder / "policy.pt").read_bytes()
    if kind == "weights bytes":
        content = draw(st.sampled_from([
            lambda target, draw_: weights[:draw_(st.integers(0, len(weights) - 1))],
            lambda target, draw_: flipped(weights, draw_),
            lambda target, draw_: draw_(st.binary(max_size=300)),
            lambda target, _: None,
            lambda target, _: FOLDER,
            lambda target, _: pickle.dumps({"stem.weight": object()}),
            lambda target, _: saved({"stem.weight": _Exploit(target.parent / "pwned")}),
            lambda target, _: saved(_Exploit(target.parent / "pwned")),
        ]))
        return lambda target, draw_: put(target / "policy.pt", content(target, draw_))
    key = draw(st.sampled_from(sorted(state)))
    change = draw(st.sampled_from(["shape", "drop", "extra", "int key", "nan", "inf", "complex", "not a tensor",
                                   "list"]))

    def damage_state(target: Path, draw_) -> None:
        damaged = dict(state)
        if change == "shape":
            damaged[key] = torch.zeros(draw_(st.lists(st.integers(0, 5), max_size=4)))
        elif change == "drop":
            del damaged[key]
        elif change == "extra":
            damaged[key + ".extra"] = torch.zeros(1)
        elif change == "int key":
            damaged[7] = damaged.pop(key)
        elif change in ("nan", "inf"):
            damaged[key] = torch.full_like(state[key], math.nan if change == "nan" else math.inf)
        elif change == "complex":
            damaged[key] = state[key].to(torch.complex64)
        elif change == "not a tensor":
            damaged[key] = draw_(st.sampled_from([1, 2.5, "weights", None, [1.0, 2.0]]))
        put(target / "policy.pt", saved(list(damaged.values()) if change == "list" else damaged))

    return damage_state


def flipped(data: bytes, draw) -> bytes:
    data = bytearray(data)
    for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
        data[position] = draw(st.integers(0, 255))
    return bytes(data)


def worth_painting(agent) -> bool:
    """An agent whose damage changed how it paints (not only its name, say), and cheap enough to let paint:
    the fuzzer may raise sizes without breaking the manifest."""
    manifest, config = agent.manifest, agent.paint_config
    changed = (config, manifest.network, manifest.data.color) != (SMALL, TINY, False)
    return changed and config.height * config.width <= 64**2 and config.episode_length <= 20 and \
        config.points_per_stroke <= 200


def check_agent_folder(folder: Path):
    """``load_agent`` refuses with a message, or gives an agent that paints; a pickle never runs."""
    try:
        agent = load_agent(folder)
    except ValueError as error:
        return refused_with_a_message(error)
    finally:
        assert not (folder.parent / "pwned").exists(), "loading an agent ran code from a pickle"
    if worth_painting(agent):
        try:
            episode = agent.paint(np.zeros((8, 8), np.uint8) if agent.conditional else None, seed=0)
        except ValueError as error:  # an unknown brush
            refused_with_a_message(error)
        else:
            assert episode.canvas.shape == (*agent.paint_config.canvas_size, 3)
    return None


def damaged_copy(agent_folder: Path, root: Path, data) -> Path:
    """A copy of the agent folder under ``root`` with one or two drawn kinds of damage."""
    folder = shutil.copytree(agent_folder, root / "agent")
    for damage in data.draw(st.lists(agent_damage(agent_folder), min_size=1, max_size=2)):
        damage(folder, data.draw)
    return folder


@fuzz(300)
@given(data=st.data())
def test_damaged_agent_folders_are_refused_with_a_message(tmp_path, agent_folder, data):
    with scratch(tmp_path) as root:
        check_agent_folder(damaged_copy(agent_folder, root, data))


@pytest.mark.parametrize(("section", "key", "value"), [
    ("env", "brush", None),  # PaintConfig took it; PaintEnv raised TypeError
    ("env", "brush", 5),
    ("env", "canvas_size", [True, True]),  # PaintConfig took it; gymnasium raised TypeError
    ("env", "grid_size", 1800),  # with the action sizes it gives: 100+ million parameters to allocate
    ("network", "hidden", 2**70),  # torch raised TypeError
    ("network", "res_blocks", 10**6),  # built for minutes
    ("network", "input_size", 10**5),  # 80 GB of coordinates
    ("network", "flag_paint_bias", math.nan),
])
def test_hostile_manifests_found_by_fuzzing_are_refused(tmp_path, agent_folder, section, key, value):
    folder = shutil.copytree(agent_folder, tmp_path / "agent")
    manifest = json.loads((folder / "agent.json").read_text())
    manifest[section][key] = value
    with contextlib.suppress(ValueError, TypeError):  # list the actions these settings give, as a trainer would
        manifest["action_nvec"] = ActionCodec(PaintConfig.from_dict(manifest["env"])).nvec.tolist()
    (folder / "agent.json").write_text(dumps(manifest))
    check_agent_folder(folder)


@pytest.mark.parametrize("where", ["x" * 300, "a\x00b", "/dev/null", "/etc/hostname", "{tmp}/agent.json", "/"])
def test_paths_that_are_not_agent_folders_are_refused(tmp_path, where):
    """The app's "a folder..." box and ``--agent`` take any text: FileNotFoundError or ValueError, which the app
    catches."""
    with pytest.raises((FileNotFoundError, ValueError), match="agent"):
        load_agent(where.format(tmp=tmp_path))


@pytest.mark.parametrize("damage", ["nan", "inf", "int key", "complex", "sparse", "exploit"])
def test_hostile_weights_found_by_fuzzing_are_refused(tmp_path, agent_folder, damage):
    folder = shutil.copytree(agent_folder, tmp_path / "agent")
    state = torch.load(folder / "policy.pt", weights_only=True)
    key = "stem.bias"
    state[key] = {"nan": torch.full_like(state[key], math.nan), "inf": torch.full_like(state[key], -math.inf),
                  "int key": state[key], "complex": state[key].to(torch.complex64),
                  "sparse": state[key].to_sparse(), "exploit": _Exploit(tmp_path / "pwned")}[damage]
    if damage == "int key":
        state[0] = state.pop(key)
    torch.save(state, folder / "policy.pt")
    assert check_agent_folder(folder) is not None, "a damaged policy.pt was loaded"


@pytest.mark.parametrize("levels", [10**9, 2**62])
def test_paint_refuses_an_agent_with_a_huge_action_space_in_one_line(tmp_path, agent_folder, levels):
    """Sizes only a subprocess under the memory limit may try: ActionCodec allocated 8 GB for 10**9 levels."""
    folder = shutil.copytree(agent_folder, tmp_path / "agent")
    manifest = json.loads((folder / "agent.json").read_text())
    manifest["env"]["pressure_levels"] = levels
    manifest["action_nvec"][manifest["action_names"].index("pressure")] = levels
    (folder / "agent.json").write_text(dumps(manifest))
    (tmp_path / "target.png").write_bytes(VALID_PNG)
    result = spiral("paint", "--agent", str(folder), "--target", str(tmp_path / "target.png"),
                    "--out", str(tmp_path / "out"))
    assert check_cli(result, "paint") is not None, "an agent with a huge action space painted"


@fuzz(12, shrink=False)
@given(data=st.data())
def test_eval_refuses_damaged_agents_in_one_line(tmp_path, agent_folder, data):
    with scratch(tmp_path) as root:
        folder = damaged_copy(agent_folder, root, data)
        try:
            load_agent(folder)
        except Exception:  # noqa: BLE001 - what the command makes of it; the test above judges the exception
            pass
        else:
            return  # a usable agent: evaluating it needs its dataset, no fuzzing matter
        result = spiral("eval", "--agent", str(folder), "--images", "1", "--bank", "0", "--samples", "2")
        assert check_cli(result, "eval") is not None, "a damaged agent was evaluated"
        assert not (root / "pwned").exists()


# --- action vectors ---------------------------------------------------------------------------------------

configs = st.fixed_dictionaries(
    {
        "canvas_size": st.tuples(st.integers(1, 80), st.integers(1, 80)),
        "grid_size": st.integers(1, 12),
        "render_scale": st.integers(1, 2),
        "episode_length": st.integers(1, 12),
        "brush": st.sampled_from(BRUSHES),
        "use_color": st.booleans(),
        "use_pressure": st.booleans(),
        "use_size": st.booleans(),
        "background": st.tuples(*[st.integers(0, 255)] * 3),
    }
)


@fuzz(500)
@given(config=configs, seed=st.integers(0, 2**16))
def test_random_episodes_never_crash_and_stay_in_range(config, seed):
    env = PaintEnv(**config)
    observation, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    terminated = False
    while not terminated:
        observation, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(observation)
        assert observation["canvas"].dtype == np.uint8 and reward == 0.0 and not truncated
    assert len(env.program.strokes) == config["episode_length"]
    env.close()


@fuzz(300)
@given(values=st.lists(st.one_of(st.integers(-2000, 2000), st.floats(allow_nan=True)), min_size=0, max_size=10))
def test_arbitrary_vectors_are_either_valid_strokes_or_refused_cleanly(values):
    env = PaintEnv(canvas_size=16, grid_size=4)
    env.reset(seed=0)
    try:
        observation, *_ = env.step(np.array(values))
    except InvalidActionError:
        return
    assert env.observation_space.contains(observation)


# --- images -----------------------------------------------------------------------------------------------


def _savable() -> list[tuple[str, str]]:
    """The (format, mode) pairs this Pillow writes, among those people upload."""
    candidates = {"PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
                  "TIFF": ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I", "F", "YCbCr",
                           "LAB"],
                  "JPEG": ["L", "RGB", "CMYK"], "WEBP": ["RGB", "RGBA"], "GIF": ["P", "L", "1"],
                  "BMP": ["1", "L", "P", "RGB", "RGBA"]}
    pairs = []
    for fmt, modes in candidates.items():
        for mode in modes:
            with contextlib.suppress(OSError, ValueError, KeyError):
                Image.new(mode, (2, 2)).save(io.BytesIO(), fmt)
                pairs.append((fmt, mode))
    return pairs


SAVABLE = _savable()


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


VALID_PNG = encoded(Image.new("RGB", (5, 3), (200, 30, 30)), "PNG")


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 2, pixels: bytes = b"") -> bytes:
    """A PNG that declares any size (a decompression bomb's header) with a few real bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def bmp_header(width: int, height: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0,
                                                                      0, 0, 0, 0)


def gif_header(width: int, height: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02D\x01\x00;")


@st.composite
def encoded_images(draw) -> bytes:
    """An image of any mode people upload, as a file, then perhaps truncated, damaged or given a bomb's size."""
    fmt, mode = draw(st.sampled_from(SAVABLE))
    size = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    length = len(Image.new(mode, size).tobytes())
    raw = draw(st.binary(min_size=length, max_size=length))
    image = Image.frombytes(mode, size, raw)  # float modes get NaN and infinities from random bytes
    options = {"transparency": 0} if mode == "P" and fmt in ("PNG", "GIF") and draw(st.booleans()) else {}
    data = encoded(image, fmt, **options)
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "size"]))
    if damage == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if damage == "flip":
        return flipped(data, draw)
    if damage == "size" and fmt == "PNG":  # rewrite the declared size, with a valid checksum
        width, height = draw(st.tuples(*[st.sampled_from([0, 1, 7000, 65535, 2**31 - 1, 2**32 - 1])] * 2))
        header = data[12:16] + struct.pack(">II", width, height) + data[24:29]
        return data[:8] + data[8:12] + header + struct.pack(">I", zlib.crc32(header)) + data[33:]
    return data


DIMENSIONS = [0, 1, 2, 6000, 6400, 7000, 65535, 2**31 - 1, 2**32 - 1]
image_bytes = st.one_of(
    encoded_images(), encoded_images(), encoded_images(),
    st.binary(max_size=400),
    st.tuples(st.sampled_from(DIMENSIONS), st.sampled_from(DIMENSIONS), st.sampled_from([1, 8, 16]),
              st.sampled_from([0, 2, 3, 4, 6]), st.binary(max_size=64)).map(lambda args: png_header(*args)),
    st.tuples(st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1)).map(lambda args: bmp_header(*args)),
    st.tuples(st.sampled_from(DIMENSIONS[:6]), st.sampled_from(DIMENSIONS[:6])).map(lambda args: gif_header(*args)),
    st.sampled_from([b"", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", b"%PDF-1.4",
                     b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>",
                     b"#define im_width 8\n#define im_height 1\nstatic char im_bits[] = {0x00};\n"]),
)


@pytest.fixture(scope="module")
def target_agents() -> dict:
    """Agents that see targets in grey and in colour, as the app's upload feeds them."""
    return {color: untrained_agent(SMALL, conditional=True, network=TINY, data=DataSettings(color=color))
            for color in (False, True)}


def check_image(data: bytes, agents: dict) -> None:
    try:
        image = open_image(data)
    except ValueError as error:
        refused_with_a_message(error)
        return
    assert image.mode in ("RGB", "RGBA") and 1 <= image.width * image.height <= MAX_PIXELS
    pixels = np.asarray(image)
    assert pixels.shape == (image.height, image.width, len(image.mode)) and pixels.dtype == np.uint8
    for agent in agents.values():
        target = agent.prepare_target(image)
        assert target.shape == (*SMALL.canvas_size, 3) and target.dtype == np.uint8


@fuzz(800)
@given(data=image_bytes)
@example(data=png_header(2**31 - 1, 2**31 - 1))
@example(data=png_header(0, 0))
@example(data=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")  # Pillow would run Ghostscript on it
def test_any_bytes_open_as_an_rgb_image_or_are_refused_with_a_message(data, target_agents):
    check_image(data, target_agents)


@pytest.mark.parametrize(("where", "error", "message"), [
    ("folder", ValueError, "not a regular file"),
    ("/dev/zero", ValueError, "not a regular file"),  # endless: reading it would exhaust memory
    ("/dev/null", ValueError, "not a regular file"),
    ("empty.png", ValueError, "empty"),
    ("missing.png", FileNotFoundError, "missing.png"),
])
def test_paths_that_are_not_image_files_are_refused(tmp_path, where, error, message):
    path = tmp_path if where == "folder" else Path(where) if where.startswith("/") else tmp_path / where
    if where == "empty.png":
        path.write_bytes(b"")
    with pytest.raises(error, match=message):
        open_image(path)


@pytest.mark.parametrize("array", [
    np.zeros((0, 0), np.uint8), np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 3), np.float32),
    np.zeros((4, 4, 2), np.uint8), np.zeros(4, np.uint8), np.zeros((4, 4, 3), bool), np.full((4, 4), np.nan),
])
def test_target_arrays_that_are_not_images_are_refused(target_agents, array):
    with pytest.raises(ValueError, match="target"):
        target_agents[False].prepare_target(array)


@fuzz(16, shrink=False)
@given(data=image_bytes, seed=st.sampled_from(SEEDS), scale=st.sampled_from(SCALES))
@example(data=VALID_PNG, seed="-1", scale="1")  # gymnasium refused the seed with a traceback
@example(data=VALID_PNG, seed="18446744073709551616", scale="1")
@example(data=b"\x89PNG\r\n\x1a\n", seed="0", scale="inf")
def test_paint_target_paints_or_refuses_in_one_line(tmp_path, agent_folder, data, seed, scale):
    with scratch(tmp_path) as folder:
        target = folder / "target.png"
        target.write_bytes(data)
        result = spiral("paint", "--agent", str(agent_folder), "--target", str(target), "--seed", seed,
                        "--scale", scale, "--out", str(folder / "out"))
        if check_cli(result, "paint") is None:
            assert (folder / "out" / "painting.png").is_file() and (folder / "out" / "target.png").is_file()
