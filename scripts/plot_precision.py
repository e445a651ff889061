"""The learner's precision against the training curve: held-out L2 of float32 and bfloat16 runs.

Reads the kept scalars of docs/results/scalars/precision/ (one folder per run, named
``<preset>-<precision>-s<seed>``: ``spiral train ... training.precision=... training.seed=...``)
and draws every run thin, coloured by precision, with each precision's mean over its seeds on a
common grid of env steps, where two or more of its runs reached.

    .venv/bin/python scripts/plot_precision.py [docs/results/scalars/precision] [docs/results/precision.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from spiral.curves import read_scalars

COLOURS = {"float32": "tab:blue", "bfloat16": "tab:orange"}


def plot_precision(runs_dir: Path, out_png: Path) -> Path:
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.add_subplot()
    grid = np.arange(25_000, 1_000_001, 12_500)
    for precision, colour in COLOURS.items():
        runs = sorted(runs_dir.glob(f"*-{precision}-s*"))
        if not runs:
            raise SystemExit(f"plot_precision.py: no runs named *-{precision}-s<seed> in {runs_dir}")
        curves = []
        for run in runs:
            series = read_scalars(run)["eval/test_l2"]
            ax.plot(series.steps, series.values, color=colour, alpha=0.3, linewidth=1)
            curves.append(np.interp(grid, series.steps, series.values, left=np.nan, right=np.nan))
        curves = np.array(curves)
        reached = (~np.isnan(curves)).sum(axis=0) >= 2  # a mean of one run is that run
        mean = np.nanmean(curves[:, reached], axis=0)
        ax.plot(grid[reached], mean, color=colour, linewidth=2.5,
                label=f"{precision}: {len(runs)} seeds, and their mean where 2 or more reached")
    ax.set(xlabel="env steps", ylabel="held-out L2 (lower is better)", ylim=(0.07, 0.12),
           title="mnist-l2 from scratch, 10 minutes a run: the learner in float32 and in bfloat16")
    ax.legend()
    ax.grid(alpha=0.3)
    figure.savefig(out_png, dpi=100)
    return out_png


if __name__ == "__main__":
    arguments = sys.argv[1:] + [None, None]
    runs = Path(arguments[0] or "docs/results/scalars/precision")
    print(plot_precision(runs, Path(arguments[1] or "docs/results/precision.png")))
