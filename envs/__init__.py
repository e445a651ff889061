"""Painting environments around the libmypaint renderer (no torch, no ray here).

``import envs`` registers ``spiral/MyPaint-v0`` with gymnasium:

    import gymnasium as gym, envs
    env = gym.make("spiral/MyPaint-v0", canvas_size=64, grid_size=32, brush="classic/pen")
"""

import gymnasium

from envs.actions import COMPONENTS, ActionCodec, InvalidActionError
from envs.config import PaintConfig
from envs.libmypaint import MissingLibMyPaintError, available_brushes
from envs.limits import MAX_GRID_SIZE, MAX_POINTS_PER_STROKE, MAX_SURFACE_PIXELS, CanvasTooLargeError
from envs.paint_env import PaintEnv, mse
from envs.painter import Painter
from envs.program import Program
from envs.stroke import Stroke

ENV_ID = "spiral/MyPaint-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="envs.paint_env:PaintEnv")

__all__ = [
    "COMPONENTS", "ENV_ID", "MAX_GRID_SIZE", "MAX_POINTS_PER_STROKE", "MAX_SURFACE_PIXELS", "ActionCodec", "CanvasTooLargeError", "InvalidActionError",
    "MissingLibMyPaintError", "PaintConfig", "PaintEnv", "Painter", "Program", "Stroke", "available_brushes", "mse",
]
