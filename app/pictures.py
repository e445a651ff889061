"""Pictures the app shows: crisp enlargements, the current stroke drawn over a canvas, replays."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw

from envs import Stroke, media

DISPLAY = 256  # pixels on screen for a canvas


def enlarge(canvas: np.ndarray, size: int = DISPLAY) -> Image.Image:
    return media.enlarge(canvas, size)


def with_stroke(canvas: np.ndarray, stroke: Stroke | None, size: int = DISPLAY) -> Image.Image:
    """The enlarged canvas with a stroke's path on top: solid orange paints, dotted cyan moves."""
    picture = enlarge(canvas, size).convert("RGB")
    if stroke is None:
        return picture
    scale = picture.width / canvas.shape[1]
    points = [tuple(point) for point in stroke.points(32, scale)]
    draw = ImageDraw.Draw(picture)
    if stroke.pen_down:
        draw.line(points, fill=(255, 140, 0), width=2)
    else:
        for start, end in zip(points[::2], points[1::2]):
            draw.line([start, end], fill=(0, 200, 255), width=2)
    x, y = points[-1]
    draw.ellipse([x - 3, y - 3, x + 3, y + 3], outline=(255, 255, 255))
    return picture


def png_bytes(picture: Image.Image | np.ndarray) -> bytes:
    picture = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    """A PNG inlined in the page: a picture that changes at every rerun (the scrubbed stroke) is then never
    fetched from the server, which forgets the previous run's pictures as soon as a new run ends (a 404
    for a browser still loading one)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def replay_gif(frames: list[np.ndarray], size: int = DISPLAY, frame_ms: int = 300) -> bytes:
    """An endlessly looping animation of the canvases, enlarged crisply, the last one held."""
    pictures = [enlarge(frame, size).convert("P", palette=Image.Palette.ADAPTIVE) for frame in frames]
    buffer = io.BytesIO()
    durations = [frame_ms] * (len(pictures) - 1) + [1500]
    pictures[0].save(buffer, "GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0, disposal=1)
    return buffer.getvalue()


def filmstrip(frames: list[np.ndarray], size: int = 64) -> Image.Image:
    """Every canvas of an episode side by side, small."""
    tiles = [enlarge(frame, size) for frame in frames]
    strip = Image.new("RGB", (sum(tile.width + 2 for tile in tiles), max(tile.height for tile in tiles)), "gray")
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + 2
    return strip
