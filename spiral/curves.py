"""Training curves from a run's TensorBoard logs, plotted to a PNG; the newest painting grid.

TensorBoard is the place to explore a run; a PNG is what goes into a report, an issue or a
comparison of runs that no longer share a machine. The trainer (``spiral.rllib.trainer``) writes
scalars to ``RUN/tb/`` with the global step set to the number of env steps sampled so far, so a
curve's x axis is env steps, or wall-clock time from the same events; ``spiral pretrain`` logs at
its Adam steps, and the axis says which (``step_label``).

The event files are read with TensorBoard's own ``EventAccumulator`` rather than by parsing
records here: the format (framing, checksums, summary protos) is TensorBoard's to keep. Figures
are drawn on a bare ``matplotlib.figure.Figure`` (rendered by Agg), not through pyplot, so no
display is needed and no global backend is switched under code that imports this module.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

# The default curves, in order. Each entry lists alternatives: the first pattern that matches a
# tag of some run is used, and an entry that matches nothing is left out.
DEFAULT_TAGS = (
    ("eval/test_l2",),  # the held-out reconstruction error (conditional runs)
    ("pretrain/held_out_greedy_mse",),  # pretraining runs: the student against ...
    ("pretrain/held_out_nll",),  # ... and how well it predicts the teacher,
    ("pretrain/train_nll",),  # ... beside the programs it learns from (apart: it overfits)
    # D(real) - D(fake), the critic's gap (wgan-gp); the non-saturating loss logs only the scores.
    ("discriminator/wasserstein", "discriminator/d_[rf]*"),
    # The learner computes the rewards (the environment's own are 0), so its mean comes first.
    ("policy/reward_mean", "env/episode_return_mean"),
    ("policy/entropy_*",),  # one per action component, so a collapsing one shows
    ("env/steps_per_s",),
)

TITLES = {
    "eval/test_l2": "held-out test L2 (lower is better)",
    "env/final_l2": "training final L2",
    "discriminator/wasserstein": "D(real) - D(fake)",
    "discriminator/d_real": "D(real)",
    "discriminator/d_fake": "D(fake)",
    "policy/reward_mean": "mean reward per step",
    "env/episode_return_mean": "mean episode return",
    "env/steps_per_s": "env steps / s",
    "pretrain/held_out_greedy_mse": "pretraining: greedy MSE on held-out demonstrations' images",
    "pretrain/held_out_nll": "pretraining: held-out NLL of the teacher's actions",
    "pretrain/train_nll": "pretraining: training NLL of the teacher's actions",
}

GRID_TAG = "paintings"  # the trainer's grid of held-out targets and paintings, logged at each checkpoint

# The tags a ``--blank`` reference applies to: both are the final canvas's L2 to its target.
L2_TAGS = ("eval/test_l2", "env/final_l2")


@dataclass(frozen=True)
class Series:
    """One tag's scalars in step order: env steps, seconds since the run's first scalar, values."""

    steps: np.ndarray
    wall: np.ndarray
    values: np.ndarray


def event_files(run_dir: Path | str) -> list[Path]:
    """The event files of a run folder (in ``RUN/tb``), or of a ``tb`` folder given directly."""
    run_dir = Path(run_dir)
    for folder in (run_dir / "tb", run_dir):
        files = sorted(folder.glob("events.out.tfevents.*"))
        if files:
            return files
    raise ValueError(f"{run_dir} has no TensorBoard logs (no events.out.tfevents.* in {run_dir / 'tb'}).")


def run_name(run_dir: Path | str) -> str:
    """A run's legend label: its folder's name (the run's, when given its ``tb`` folder)."""
    folder = Path(run_dir).resolve()
    return folder.parent.name if folder.name == "tb" else folder.name


@dataclass(frozen=True)
class RunLogs:
    """What spiral reads of a run's TensorBoard files: every scalar, and the newest painting grid."""

    scalars: dict[str, Series]
    grid: tuple[int, bytes] | None  # (env steps, PNG) of the last "paintings" image; None before a checkpoint


def read_logs(run_dir: Path | str) -> RunLogs:
    """``read_scalars`` and the newest painting grid the trainer logged, in one pass over the files."""
    return RunLogs(*_read(run_dir)[1:])


def read_scalars(run_dir: Path | str) -> dict[str, Series]:
    """Every scalar tag of a run, merged over its event files and sorted by step.

    A resumed run appends a new event file, and it restarts from its last checkpoint, so it may
    log again steps that the earlier file already holds; those steps take the later file's
    values, as they are the ones the run went on from. Files are ordered by their first event.
    """
    return _read(run_dir)[1]


def _read(run_dir: Path | str) -> tuple[float, dict[str, Series], tuple[int, bytes] | None]:
    """``read_scalars``, the wall time its series count from (the run's first scalar), and the newest grid."""
    per_file, newest = [], None
    for path in event_files(run_dir):
        # 0: keep every scalar; 1: of the images, only the newest of each tag (the reservoir keeps the last)
        accumulator = EventAccumulator(str(path), size_guidance={SCALARS: 0, IMAGES: 1})
        accumulator.Reload()
        events = {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()[SCALARS]}
        if GRID_TAG in accumulator.Tags()[IMAGES]:
            image = accumulator.Images(GRID_TAG)[-1]
            if newest is None or image.wall_time >= newest.wall_time:
                newest = image
        first = min((event.wall_time for tagged in events.values() for event in tagged), default=np.inf)
        per_file.append((first, path.name, events))
    merged: dict[str, dict[int, tuple[float, float]]] = {}
    for _, _, events in sorted(per_file, key=lambda item: item[:2]):
        for tag, tagged in events.items():
            merged.setdefault(tag, {}).update({event.step: (event.wall_time, event.value) for event in tagged})
    start = min((wall for points in merged.values() for wall, _ in points.values()), default=0.0)
    series = {}
    for tag, points in sorted(merged.items()):
        steps = np.array(sorted(points), dtype=np.int64)
        wall, values = (np.array([points[step][i] for step in steps], dtype=np.float64) for i in (0, 1))
        series[tag] = Series(steps, wall - start, values)
    return start, series, None if newest is None else (int(newest.step), newest.encoded_image_string)


def copy_scalars(run_dir: Path | str, out_dir: Path | str, tags: Collection[str] | None = None) -> Path:
    """Write a run's scalars (those of ``tags`` only, if given), steps and wall times kept, to one
    event file in ``out_dir``.

    A run's logs also hold painting grids, most of their size; a shipped agent keeps only the
    scalars, enough for ``spiral curves`` to redraw every curve.
    """
    from tensorboardX import SummaryWriter

    start, scalars, _ = _read(run_dir)
    if tags is not None and not set(tags) <= scalars.keys():
        raise ValueError(f"{run_dir} has no scalars {sorted(set(tags) - scalars.keys())}")
    writer = SummaryWriter(str(out_dir))
    for tag, series in scalars.items():
        if tags is not None and tag not in tags:
            continue
        for step, wall, value in zip(series.steps, series.wall, series.values):
            writer.add_scalar(tag, float(value), int(step), walltime=start + float(wall))
    writer.close()
    return Path(out_dir)


def default_tags(available: set[str]) -> list[str]:
    """The curves that say most about a run, those of them it logged."""
    tags = []
    for alternatives in DEFAULT_TAGS:
        for pattern in alternatives:
            matches = sorted(fnmatch.filter(available, pattern))
            if matches:
                tags += matches
                break
    return tags


def title(tag: str) -> str:
    """A subplot's title: what the tag means, then, below it so a one-panel figure does not cut it off, the tag
    itself so it can be asked for."""
    component = tag.removeprefix("policy/entropy_")
    meaning = TITLES.get(tag) or (f"entropy of {component}" if component != tag else None)
    return f"{meaning}\n[{tag}]" if meaning else tag


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """An exponential moving average, TensorBoard's smoothing: 0 leaves the values as they are."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {weight}")
    out = np.empty_like(values, dtype=np.float64)
    for i, value in enumerate(values):
        out[i] = value if i == 0 else weight * out[i - 1] + (1 - weight) * value
    return out


def blank_lines(data: Mapping[str, Mapping[str, Series]]) -> dict[str, float]:
    """The blank canvas's L2 that conditional runs log on their held-out images: the floor under test L2.

    One line when every run has the same (same images, same canvas), else one per run.
    """
    blanks = {label: float(scalars["eval/blank_l2"].values[-1])
              for label, scalars in data.items() if "eval/blank_l2" in scalars}
    if len(set(blanks.values())) == 1:
        return {"blank canvas": next(iter(blanks.values()))}
    return {f"blank canvas, {label}": blank for label, blank in blanks.items()}


def plot_curves(runs: Sequence[Path | str] | Mapping[str, Path | str], out_png: Path | str,
                tags: Sequence[str] | None = None, x: Literal["steps", "wall", "both"] = "steps",
                references: Mapping[str, Mapping[str, float]] | None = None,
                smoothing: float = 0.0) -> Path:
    """``curves_figure`` saved to ``out_png``; returns its path."""
    figure = curves_figure(runs, tags, x, references, smoothing)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=100)
    return out_png


def _check_options(x: str, smoothing: float) -> None:
    if x not in ("steps", "wall", "both"):
        raise ValueError(f"x must be 'steps', 'wall' or 'both', got {x!r}")
    smooth(np.zeros(1), smoothing)  # a ValueError for a weight outside [0, 1)


def curves_figure(runs: Sequence[Path | str] | Mapping[str, Path | str], tags: Sequence[str] | None = None,
                  x: Literal["steps", "wall", "both"] = "steps",
                  references: Mapping[str, Mapping[str, float]] | None = None, smoothing: float = 0.0) -> Figure:
    """One subplot per tag, one line per run: ``draw_curves`` of the runs' scalars.

    Args:
        runs: run folders, labelled by their names, or ``{label: run folder}``.
        tags, x, references, smoothing: as ``draw_curves`` takes them.
    """
    _check_options(x, smoothing)  # before reading anything
    if not runs:
        raise ValueError("no runs to plot")
    labelled = dict(runs) if isinstance(runs, Mapping) else {run_name(run): run for run in runs}
    if len(labelled) < len(runs):
        raise ValueError(f"runs share a folder name ({', '.join(map(run_name, runs))}): label them")
    return draw_curves({label: read_scalars(run) for label, run in labelled.items()}, tags, x, references, smoothing)


def step_label(data: Mapping[str, Mapping[str, Series]], tag: str) -> str:
    """What a step is on ``tag``'s x axis: ``spiral train`` logs at env steps, ``spiral pretrain`` (a run with
    ``pretrain/`` scalars) at Adam steps, and a panel may hold both."""
    kinds = {any(name.startswith("pretrain/") for name in scalars) for scalars in data.values() if tag in scalars}
    return {frozenset({False}): "env steps", frozenset({True}): "Adam steps (pretraining)"}.get(
        frozenset(kinds), "env steps; Adam steps for pretraining runs")


def draw_curves(data: Mapping[str, Mapping[str, Series]], tags: Sequence[str] | None = None,
                x: Literal["steps", "wall", "both"] = "steps",
                references: Mapping[str, Mapping[str, float]] | None = None, smoothing: float = 0.0) -> Figure:
    """One subplot per tag, one line per run, from scalars already read (``{label: read_scalars(run)}``).

    Args:
        data: each run's scalars, by the label its line gets.
        tags: the scalars to plot (default: ``default_tags`` of what the runs logged).
        x: ``"steps"`` (env steps), ``"wall"`` (hours since each run's first scalar), or
            ``"both"``: two columns, steps on the left, wall time on the right.
        references: dashed horizontal lines, ``{tag: {label: y}}``, e.g.
            ``{"eval/test_l2": {"blank canvas": 0.089}}``.
        smoothing: EMA weight in [0, 1); above 0 the raw curve stays, faint, behind the smooth one.
    """
    _check_options(x, smoothing)
    if not data:
        raise ValueError("no runs to plot")
    available = set().union(*data.values())
    tags = list(tags) if tags else default_tags(available)
    missing = [tag for tag in tags if tag not in available]
    if missing or not tags:
        raise ValueError(f"no run has the tag(s) {', '.join(missing) or '(none asked)'}; "
                         f"available: {', '.join(sorted(available)) or 'none (no scalars logged yet)'}")
    references = {tag: dict(lines) for tag, lines in (references or {}).items()}
    for name, blank in blank_lines(data).items():
        references.setdefault("eval/test_l2", {}).setdefault(name, blank)
    columns = ["steps", "wall"] if x == "both" else [x]
    # One tag per row when both axes are drawn; otherwise a grid up to three subplots wide.
    width = 2 if x == "both" else min(3, len(tags))
    panels = [(tag, axis) for tag in tags for axis in columns]
    rows = -(-len(panels) // width)
    figure = Figure(figsize=(4.8 * width, 3.2 * rows), layout="constrained")
    colors = {label: f"C{index % 10}" for index, label in enumerate(data)}
    for index, (tag, axis) in enumerate(panels):
        ax = figure.add_subplot(rows, width, index + 1)
        for label, scalars in data.items():
            if tag not in scalars:
                continue
            series = scalars[tag]
            xs = series.steps if axis == "steps" else series.wall / 3600
            if smoothing:
                ax.plot(xs, series.values, color=colors[label], alpha=0.25, linewidth=1)
            ax.plot(xs, smooth(series.values, smoothing), color=colors[label], linewidth=1.5)
        lines = [ax.axhline(y, color="0.35", linestyle="--", linewidth=1, label=f"{name} ({y:g})")
                 for name, y in references.get(tag, {}).items()]
        if lines:
            ax.legend(handles=lines, fontsize=7)
        ax.set_title(title(tag), fontsize=9)
        ax.set_xlabel(step_label(data, tag) if axis == "steps" else "wall-clock hours", fontsize=8)
        if axis == "steps":
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    # The runs are named once, above the subplots: a run may lack some tags, never its entry.
    figure.legend(handles=[Line2D([], [], color=color, label=label) for label, color in colors.items()],
                  loc="outside upper center", ncols=min(len(colors), 4), fontsize=8, frameon=False)
    return figure
