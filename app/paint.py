"""The app's Paint page: pick an agent, let it paint, replay it stroke by stroke, take it home.

A page of ``app/spiral_app.py`` (Streamlit runs it top to bottom at every interaction). It only
calls the inference API (``spiral.agent``): no Ray in this process.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import streamlit as st
from PIL import Image

from app.agents import AUTOMATIC, available_agents, describe, open_agent, short_name, without_server_paths
from app.pictures import DISPLAY, data_url, enlarge, filmstrip, png_bytes, replay_gif, with_stroke
from envs import Program, available_brushes, mse
from spiral.agent import Episode, stroke_choice_label, temperature_label
from spiral.datasets import load_dataset
from spiral.images import MAX_PIXELS, open_image
from spiral.shipped import default_agent

UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"]
UPLOAD_SIDE = 1024  # uploads are decoded no larger: an agent sees 64 px, the page shows 256
RENDER_SIZES = [256, 512, 768, 1024]  # re-rendering and the downloads: the program replays at any size
MAX_PROPOSALS = 16  # strokes a reconstruction may choose each step from: 16 costs about 10x the agent's own time
MAX_REFINE = 4  # hill-climbing rounds on each chosen stroke: up to 18 renders a round


# Every cache is bounded in entries, and so in bytes: agents are a few MB each (8 of them), a painting's
# frames at most 21 x 64 x 64 x 3 bytes (64: 17 MB; grids of at most 16 of them: 8 grids, 35 MB), a rendering a
# PNG of at most 1024^2 x 3 bytes (16: 48 MB).
@st.cache_resource(max_entries=8, show_spinner="Loading the agent...")
def cached_agent(source: str):
    return open_agent(source)


@st.cache_data(max_entries=64, show_spinner="Painting...")
def cached_episode(source: str, target_png: bytes | None, seed: int, greedy: bool, temperature: float,
                   proposals: int = 1, refine: int = 0) -> dict:
    """One painting, as plain data Streamlit can cache: the program, the frames, the score."""
    target = None if target_png is None else np.asarray(Image.open(io.BytesIO(target_png)).convert("RGB"))
    return as_data(cached_agent(source).paint(target, seed=seed, greedy=greedy, temperature=temperature,
                                              proposals=proposals, refine=refine))


@st.cache_data(max_entries=8, show_spinner="Painting...")
def cached_samples(source: str, seeds: tuple[int, ...], greedy: bool, temperature: float) -> list[dict]:
    """Paintings from scratch, one per seed, painted together (``Agent.paint_all``: one network pass per
    stroke for all of them, several times faster than one by one); each is the painting its seed gives
    alone, in ``spiral paint --seed`` as here."""
    episodes = cached_agent(source).paint_all(seeds=list(seeds), greedy=greedy, temperature=temperature)
    return [as_data(episode) for episode in episodes]


def as_data(episode: Episode) -> dict:
    """An episode as plain data Streamlit can cache: the program, the frames, the score."""
    return {"program": episode.program.to_json(), "frames": episode.frames, "target": episode.target,
            "l2": episode.l2}


@st.cache_data(max_entries=16, show_spinner="Rendering with the real brush...")
def cached_render(program_json: str, pixels: int, brush: str) -> bytes:
    """The program painted ``pixels`` wide with ``brush``; envs.CanvasTooLargeError (a ValueError) over the pixel
    budget."""
    program = dataclasses.replace(Program.from_json(program_json), brush=brush)
    return png_bytes(program.render(scale=pixels / program.width))  # Painter checks envs.MAX_SURFACE_PIXELS


@st.cache_data(max_entries=8, show_spinner="Loading held-out examples...")
def held_out_examples(dataset: str, size: tuple[int, int], color: bool, invert: bool) -> np.ndarray:
    return load_dataset(dataset, size, color=color, invert=invert, limit=64).test


def pick_agent(label: str, key: str, place=st.sidebar, default: int = 0, automatic: bool = False) -> str | None:
    """A choice of agent (or a typed folder, or ``AUTOMATIC``); None, with a message, when it does not load."""
    choices = ({AUTOMATIC: AUTOMATIC} if automatic else {}) | {choice.label: choice.source
                                                              for choice in available_agents()}
    picked = place.selectbox(label, [*choices, "a folder..."], index=default, key=key)
    source = choices.get(picked)
    if source == AUTOMATIC:
        return source
    if source is None:
        source = place.text_input("Agent folder", key=f"{key}-path", placeholder="runs/<run>/best")
        if not source:
            return None
    try:
        cached_agent(source)
    except (ValueError, FileNotFoundError) as error:
        place.error(f"Cannot load that agent: {without_server_paths(str(error))}")
        return None
    return source


def read_upload() -> Image.Image | None | ValueError:
    """The uploaded image; None without an upload; the ValueError, shown, for a file that cannot be painted."""
    upload = st.file_uploader(f"Upload an image (up to {MAX_PIXELS // 1_000_000} megapixels)", type=UPLOAD_TYPES,
                              key="upload")
    if upload is None:
        return None
    try:
        return open_image(upload.getvalue(), max_side=UPLOAD_SIDE)
    except ValueError as error:
        st.error(f"That file cannot be painted: {error}")
        return error


def choose_target(agent, upload: Image.Image | None) -> tuple[np.ndarray | None, str]:
    """The uploaded image, a drawing or a held-out dataset example, as the agent will see it."""
    if upload is not None:
        height, width = agent.paint_config.canvas_size
        original = upload.info["original_size"]  # before open_image fitted it into UPLOAD_SIDE
        if min(original) < min(height, width) / 4 or max(original) > 8 * min(original):
            st.warning(f"Your image is {original[0]}x{original[1]} pixels: it is fitted into the agent's "
                       f"{width}x{height} canvas with its aspect kept, so little of it will show.")
        try:
            return agent.prepare_target(upload), "your image"
        except ValueError as error:
            st.error(f"That file cannot be painted: {error}")
            return None, ""
    if st.toggle("Draw a target yourself", key="draw"):
        drawing = draw_target(agent)
        if drawing is not None:
            return drawing, "your drawing"
    data = agent.manifest.data
    examples = held_out_examples(data.dataset, agent.paint_config.canvas_size, data.color, data.invert)
    index = st.slider("...or a held-out example", 0, len(examples) - 1, 0, key="example")
    return examples[index], f"held-out example {index}"


def draw_target(agent) -> np.ndarray | None:
    """A sketch in the page, in the agent's colours (white on black for MNIST agents)."""
    from streamlit_drawable_canvas import st_canvas  # a custom component: only inside `streamlit run`

    dark = sum(agent.paint_config.background) < 3 * 128
    ink, paper = ("#ffffff", "#000000") if dark else ("#000000", "#ffffff")
    st.space("medium")  # the canvas's toolbar rises 2.65rem above it on hover: here, not over the toggle's label
    result = st_canvas(stroke_width=18, stroke_color=ink, background_color=paper, height=DISPLAY, width=DISPLAY,
                       drawing_mode="freedraw", return_image_data=True, key="sketch")
    if result.image_data is None or not result.json_data or not result.json_data.get("objects"):
        st.caption("Draw with the mouse; the agent repaints your sketch.")
        return None
    sketch = Image.fromarray(result.image_data.astype(np.uint8), "RGBA")
    background = Image.new("RGBA", sketch.size, paper)
    return agent.prepare_target(Image.alpha_composite(background, sketch).convert("RGB"))


def show_replay(episode: dict, key: str) -> None:
    """Slider, animation, filmstrip, stroke table, re-rendering and downloads of one painting."""
    program = Program.from_json(episode["program"])
    frames = episode["frames"]
    step = st.slider("Stroke", 0, len(program.strokes), len(program.strokes), key=f"{key}-step")
    stroke = program.strokes[step - 1] if step else None
    left, right = st.columns(2)
    left.image(data_url(png_bytes(with_stroke(frames[step], stroke))), caption=f"after stroke {step}", width=DISPLAY)
    if right.toggle("Play the whole episode", key=f"{key}-play"):
        right.image(replay_gif(frames), caption="replay (loops)", width=DISPLAY)
    st.image(png_bytes(filmstrip(frames)), caption="every stroke, left to right")
    st.dataframe(
        [{"#": i + 1, "pen": "down" if s.pen_down else "up", "start": _xy(s.start), "control": _xy(s.control),
          "end": _xy(s.end), "size": s.size, "pressure": round(s.pressure, 2),
          "colour": "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in s.color))}
         for i, s in enumerate(program.strokes)],
        hide_index=True,
    )
    size_column, brush_column = st.columns(2)
    pixels = size_column.select_slider("Re-render with the real brush at (px)", RENDER_SIZES, key=f"{key}-size")
    brushes = available_brushes()
    brush = brush_column.selectbox("with the brush", brushes, key=f"{key}-brush",
                                   index=brushes.index(program.brush) if program.brush in brushes else 0)
    try:
        rendered = cached_render(episode["program"], pixels, brush)
    except ValueError as error:  # envs.CanvasTooLargeError: a canvas too large to re-render at this size
        st.error(f"Cannot re-render at {pixels} px: {error}")
        rendered = None
    if rendered is not None:
        st.image(rendered, caption=f"{pixels} px with {brush}, the same strokes", width=min(pixels, 512))
    columns = st.columns(4)  # a download does not rerun the page, which would cancel it (a new file URL)
    if rendered is not None:
        columns[0].download_button("PNG", rendered, "painting.png", "image/png", key=f"{key}-png",
                                   on_click="ignore")
    # Made when clicked (a callable), not at every rerun: a 1,024 px GIF takes a second and megabytes.
    columns[1].download_button("GIF", lambda: replay_gif(frames, pixels), "painting.gif", "image/gif",
                               key=f"{key}-gif", on_click="ignore")
    columns[2].download_button("JSON", episode["program"], "painting.json", "application/json", key=f"{key}-json",
                               on_click="ignore")
    columns[3].download_button("SVG", program.to_svg(pixels / program.width), "painting.svg", "image/svg+xml",
                               key=f"{key}-svg", on_click="ignore")


def _xy(point: tuple[float, float]) -> str:
    return f"({point[0]:.1f}, {point[1]:.1f})"


def show_agent(source: str) -> None:
    """What the agent is, in the sidebar."""
    for name, value in describe(cached_agent(source), source).items():
        st.sidebar.markdown(f"**{name}**: {value}")


def score_caption(episode: dict, how: str) -> str:
    """The painting's L2 beside the blank canvas's on the same target, and the share of it removed; ``how``
    it was painted (its seed, or greedy)."""
    blank = float(mse(episode["frames"][0], episode["target"]))
    removed = f", {1 - episode['l2'] / blank:.0%} of it removed" if blank > 0 else ""
    return f"painting ({how}): L2 {episode['l2']:.4f} (blank canvas {blank:.4f}{removed})"


def paint_page(source: str) -> None:
    seed = st.sidebar.number_input("Seed", 0, 10**6, 0, key="seed")
    greedy = st.sidebar.toggle("Greedy (most likely strokes)", key="greedy")
    own = 1.0 if source == AUTOMATIC else cached_agent(source).temperature  # a generator may ship with a lower one
    if "temperature" not in st.session_state or st.session_state.get("temperature_of") != source:
        # Another agent (or the slider hidden by greedy): start from this agent's own, not from the last value.
        st.session_state["temperature"], st.session_state["temperature_of"] = own, source
    first = None if source == AUTOMATIC else cached_agent(source).manifest.first_stroke_temperature
    temperature = 1.0 if greedy else st.sidebar.slider(
        "Temperature", 0.5, 1.5, step=0.05, key="temperature",
        help=f"1 samples the strokes as the agent learned them; lower is likelier and less varied, higher wilder. "
             f"This agent's own: {own:g}." + ("" if first is None else f" Its first stroke, which chooses much of "
                                                                       f"what it paints, stays at {first:g}."))
    label = "" if greedy else temperature_label((temperature if first is None else first, temperature))
    sampled = f", {label}" if label else ""
    if source == AUTOMATIC or cached_agent(source).conditional:
        proposals = st.sidebar.slider(
            "Proposals per step", 1, MAX_PROPOSALS, 1, key="proposals",
            help="At each step the agent proposes this many strokes (its own choice first), each is tried on the "
                 "canvas and the one nearest your picture is painted: a closer painting for about half this many "
                 "times the time (8: about 4 times). 1: the agent alone.")
        refine = st.sidebar.slider(
            "Hill-climbing rounds", 0, MAX_REFINE, 0, key="refine",
            help="Then the chosen stroke is nudged (its end or bend one cell, its size one step) while that brings "
                 "the painting closer to your picture, at most this many times: closer still, for up to 18 tries "
                 "a round. 0: as chosen.")
        sampled += stroke_choice_label(proposals, refine)
        st.subheader("Reconstruct")
        upload = read_upload()
        if isinstance(upload, ValueError):
            return
        if source == AUTOMATIC:
            source = str(default_agent(conditional=True, picture=upload))
            kind = "a drawing or a digit" if upload is None else "your picture"
            st.caption(f"Painted by {short_name(source)}, the shipped agent for {kind}: "
                       f"{describe(cached_agent(source), source)['good at']}. Pick another in the sidebar.")
        show_agent(source)
        agent = cached_agent(source)
        target, origin = choose_target(agent, upload)
        if target is None:
            return
        episode = cached_episode(source, png_bytes(target), int(seed), greedy, temperature, proposals, refine)
        columns = st.columns(2)
        columns[0].image(png_bytes(enlarge(target)), caption=f"target: {origin}, as the agent sees it", width=DISPLAY)
        caption = score_caption(episode, f"greedy{sampled}" if greedy else f"seed {seed}{sampled}")
        columns[1].image(png_bytes(enlarge(episode["frames"][-1])), caption=caption, width=DISPLAY)
        st.caption("L2 is the mean squared error to the target per pixel and colour channel, 0 to 1: lower is better.")
    else:
        show_agent(source)
        st.subheader("Generate")
        if greedy:  # the most likely strokes do not depend on the seed: one painting, not copies of it
            st.caption("Greedy: the agent paints its most likely strokes, the same painting for every seed.")
            seeds = [int(seed)]
        else:
            seeds = [int(seed) + i for i in range(st.slider("Samples", 1, 16, 8, key="samples"))]
        samples = dict(zip(seeds, cached_samples(source, tuple(seeds), greedy, temperature)))
        for column, (sample_seed, sample) in zip(st.columns(min(len(seeds), 8)) * 2, samples.items()):
            column.image(png_bytes(enlarge(sample["frames"][-1], 96)),
                         caption="greedy" if greedy else f"seed {sample_seed}{sampled}")
        # The seeds themselves are the options: a new seed gives a new list, never a stale label.
        chosen = st.selectbox("Replay sample", seeds, format_func=lambda s: f"seed {s}", key="pick")
        episode = samples[chosen]
        target, proposals, refine = None, 1, 0
    st.subheader("Replay")
    show_replay(episode, "main")
    compare(source, target, int(seed), greedy, temperature, proposals, refine)


def compare(source: str, target: np.ndarray | None, seed: int, greedy: bool, temperature: float,
            proposals: int, refine: int) -> None:
    """The same target painted by a second agent, side by side."""
    with st.expander("Compare with another agent") as place:
        # Offer first the next agent of the same kind: one that reconstructs too, or paints from scratch too.
        kind = target is not None
        default = next((i for i, choice in enumerate(available_agents())
                        if choice.source != source and cached_agent(choice.source).conditional == kind), 0)
        other = pick_agent("Second agent", f"other-{'reconstruct' if kind else 'generate'}", place, default=default)
        if other is None:
            return
        if cached_agent(other).conditional != (target is not None):
            st.warning("Pick an agent of the same kind (both reconstruct, or both paint from scratch).")
            return
        target_png = None if target is None else png_bytes(target)
        columns = st.columns(2)
        for column, agent_source in zip(columns, (source, other)):
            episode = cached_episode(agent_source, target_png, seed, greedy, temperature, proposals, refine)
            score = "" if episode["l2"] is None else f": L2 {episode['l2']:.4f}"
            column.image(png_bytes(enlarge(episode["frames"][-1])), caption=f"{short_name(agent_source)}{score}",
                         width=DISPLAY)


def paint() -> None:
    st.caption("The agent and its settings are in the sidebar (the arrow at the top left on a phone).")
    source = pick_agent("Agent", "agent", automatic=True)
    if source is None:
        st.info("Choose an agent in the sidebar.")
        return
    paint_page(source)


paint()
