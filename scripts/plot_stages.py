"""What each stage of the learning pipeline buys: held-out MSE against the CPU-hours spent so far.

Reads docs/results/stages.json (each path: a label, where it starts, and its stages, each with
the CPU-hours it took and, where it was evaluated, the greedy MSE on the first 500 MNIST test digits that
`spiral eval --images 500 --bank 0` measured at its end) and draws one line per path, a marker
per evaluated stage, labelled with the stage's name. The figures are measured, not recomputed
here: the runs behind them stay out of git.

    .venv/bin/python scripts/plot_stages.py [docs/results/stages.json] [docs/results/stages.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from matplotlib.figure import Figure


def plot_stages(data: dict, out_png: Path) -> Path:
    figure = Figure(figsize=(9, 5), layout="constrained")
    ax = figure.add_subplot()
    for index, path in enumerate(data["paths"]):
        # A path starts from scratch (the blank canvas), or where another path's stage ended.
        hours, mse, names = [path.get("start_hours", 0.0)], [path.get("start_mse", data["blank"])], [""]
        for stage in path["stages"]:
            hours.append(hours[-1] + stage["cpu_hours"])
            mse.append(stage.get("mse"))
            names.append(stage["name"])
        evaluated = [(h, m, n) for h, m, n in zip(hours, mse, names) if m is not None]
        color = f"C{index}"
        ax.plot([h for h, _, _ in evaluated], [m for _, m, _ in evaluated], "o-", color=color, label=path["label"])
        for h, m, name in evaluated[1:]:
            ax.annotate(name, (h, m), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    ax.axhline(data["blank"], color="0.35", linestyle="--", linewidth=1, label=f"blank canvas ({data['blank']:g})")
    if "target" in data:
        ax.axhline(data["target"], color="C3", linestyle=":", linewidth=1, label=f"target ({data['target']:g})")
    ax.set_xlabel("CPU-hours, whole pipeline (search included)")
    ax.set_ylabel(data["metric"])
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=100)
    return out_png


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/stages.json")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else source.with_suffix(".png"))
    print(plot_stages(json.loads(source.read_text()), out))


if __name__ == "__main__":
    main()
