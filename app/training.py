"""The app's Training page: the runs under the runs folder, their curves, newest paintings and exports.

It reads what a run writes as it trains (``experiment.json``, TensorBoard files under ``tb/``,
``agent/`` and ``best/`` exports, ``run.lock``), so it follows a run on this machine or on a Ray
cluster whose head writes the runs folder, and it needs nothing from the trainer but its files.
The page looks again every few seconds while its toggle is on (a fragment: the rest of the app stays).
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import streamlit as st

from app.agents import runs_dir
from spiral.curves import RunLogs, draw_curves, read_logs
from spiral.runs import last_written, list_runs, run_holder

# Seconds between looks at the runs folder while "Follow" is on. A look that finds new logs reads them
# (about a second for a run of hours) and redraws the curves, on the machine that may be training.
REFRESH_S = 5
EXPORTS = ("best", "agent")  # the best export on held-out images first, then the newest


@st.cache_data(max_entries=4, show_spinner=False)
def cached_logs(run: str, written: float) -> tuple[RunLogs, bytes | None]:
    """The run's logs and its default curves as a PNG (None before its first scalar), read once per change
    of its files (``written`` keys the cache)."""
    try:
        logs = read_logs(run)
    except ValueError:  # no TensorBoard file yet
        return RunLogs({}, None), None
    try:
        figure = draw_curves({Path(run).name: logs.scalars})
    except ValueError:  # no scalar yet, or none of the curves spiral draws by default
        return logs, None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return logs, buffer.getvalue()


def training_page() -> None:
    st.subheader("Training")
    follow = st.toggle("Follow the runs (look again every few seconds)", value=True, key="follow")
    st.fragment(run_every=REFRESH_S if follow else None)(show_runs)()


def show_runs() -> None:
    """The choice of run and the chosen run (a fragment: redrawn on its own while following)."""
    folder = runs_dir()
    runs = list_runs(folder)
    if not runs:
        st.info(f"No runs in the runs folder ({folder.name}/) yet. Start one, for example "
                "`spiral train --preset smoke`, and it appears here as it trains.")
        return
    run = st.selectbox("Run", runs, format_func=lambda path: path.name, key="run")  # its status: below, kept fresh
    show_run(run)


def status(run: Path) -> str:
    """"training now" while a process holds the run, else when it last wrote anything."""
    holder = run_holder(run)
    if holder is not None:
        return f"training now, since {holder.get('since', '?')} on {holder.get('host', '?')}"
    written = last_written(run)
    return f"stopped; last written {datetime.fromtimestamp(written):%Y-%m-%d %H:%M}" if written else "empty"


def show_run(run: Path) -> None:
    """The run's progress, curves, newest painting grid and exports."""
    st.caption(f"{run.name}: {status(run)}.")
    logs, curves = cached_logs(str(run), last_written(run))
    scalars = logs.scalars
    steps = max((int(series.steps[-1]) for series in scalars.values()), default=0)
    columns = st.columns(3)
    columns[0].metric("env steps", f"{steps:,}")
    for column, tag, name in ((columns[1], "eval/test_l2", "held-out L2"),
                              (columns[2], "eval/blank_l2", "blank canvas L2")):
        if tag in scalars:
            column.metric(name, f"{scalars[tag].values[-1]:.4f}")
    if curves is None:
        st.info("No curves yet: a run logs the ones drawn here from its first training iteration on.")
    else:
        st.image(curves, caption="curves from the run's TensorBoard files (dashed: the blank canvas)")
    if logs.grid is not None:
        step, png = logs.grid
        st.image(png, caption=f"newest paintings, at {step:,} env steps (held-out targets above the paintings "
                              "of a reconstruction agent)", width=512)
    show_exports(run)


def show_exports(run: Path) -> None:
    """The run's exports, each with a button that opens it on the painting page."""
    exports = [run / name for name in EXPORTS if (run / name / "agent.json").is_file()]
    if not exports:
        st.caption("No export yet: a run exports its agent at each checkpoint.")
        return
    for column, export in zip(st.columns(len(exports)), exports):
        label = f"{run.name}/{export.name}"  # as app.agents.available_agents labels it
        written = datetime.fromtimestamp((export / "agent.json").stat().st_mtime)
        column.caption(f"{label}: exported {written:%H:%M:%S}"
                       + (", the best on the run's validation images" if export.name == "best" else ", the newest"))
        if column.button(f"Paint with {label}", key=f"paint-{export.name}"):
            st.session_state["agent"] = label
            st.switch_page("paint.py")


training_page()
