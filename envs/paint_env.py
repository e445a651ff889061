"""``PaintEnv``: an agent paints with real libmypaint brush strokes, one stroke per step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.actions import ActionCodec
from envs.color_fit import ColorFit
from envs.config import PaintConfig
from envs.painter import Painter, agent_view
from envs.program import Program
from envs.stroke import Stroke

TargetSource = Callable[[np.random.Generator], np.ndarray] | np.ndarray


def mse(canvases: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mean squared error per pixel and channel over the last three axes (H, W, C), in float64.

    Images are uint8 scaled to [0, 1]; any leading axes (a batch, episode steps) are kept, so one
    image gives a 0-d array (``float()`` it). The one definition of "L2" in the project: the
    environment's ``info["l2"]``, evaluation and the learner's L2 reward all call it, so the
    figures they report are comparable to the last digit.
    """
    difference = (np.asarray(canvases, np.float64) - np.asarray(targets, np.float64)) / 255.0
    return np.mean(difference * difference, axis=(-3, -2, -1))


class PaintEnv(gym.Env):
    """Paint ``episode_length`` strokes on a blank canvas, optionally to reproduce a target.

    Actions are SPIRAL's ``MultiDiscrete`` stroke vectors (``envs.actions`` documents the
    components and their order). Observations are a dict:

    - ``canvas``: the canvas, (height, width, 3) uint8;
    - ``step``: the fraction of the episode already painted, shape (1,) float32 in [0, 1];
    - ``prev_action``: the previous action (zeros at the first step, which ``step`` tells apart);
    - ``target``: (conditional mode only) the image to reproduce, like ``canvas``.

    The environment is conditional when it has a ``target_source``: an array of images
    (N, height, width[, channels]) sampled with the environment's seed, or a function
    ``rng -> image``. ``reset(options={"target": image})`` paints a given image instead.
    Images are uint8, or floats in [0, 1]; greyscale ones are repeated over RGB.

    The reward is 0 unless ``config.reward`` asks for the L2 baseline (SPIRAL's adversarial
    rewards are computed by the learner from the canvases). ``info["stroke"]`` is the
    ``Stroke`` just drawn and ``env.program`` the episode so far as a replayable ``Program``.
    With ``config.fit_color`` each stroke takes the target's best colour for its footprint
    (``envs.color_fit``), and ``prev_action`` and ``info["action"]`` show the colour painted.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        config: PaintConfig | dict | None = None,
        target_source: TargetSource | None = None,
        render_mode: str | None = None,
        **settings: Any,
    ):
        if isinstance(config, dict):
            settings = config | settings
            config = None
        config = config or PaintConfig()
        self.config = PaintConfig.from_dict(config.to_dict() | settings) if settings else config
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        if self.config.reward != "none" and target_source is None:
            raise ValueError(f"reward={self.config.reward!r} compares with a target: pass a target_source.")
        if self.config.fit_color and target_source is None:
            raise ValueError("fit_color takes each stroke's colour from the target: pass a target_source.")
        self.render_mode = render_mode
        self.codec = ActionCodec(self.config)
        self.action_space = self.codec.space
        canvas_space = spaces.Box(0, 255, (*self.config.canvas_size, 3), np.uint8)
        observation = {
            "canvas": canvas_space,
            "step": spaces.Box(0.0, 1.0, (1,), np.float32),
            "prev_action": spaces.MultiDiscrete(self.codec.nvec),
        }
        self._targets = None
        if target_source is not None:
            observation["target"] = canvas_space
            self._targets = self._check_target_source(target_source)
        self.observation_space = spaces.Dict(observation)
        self._painter = self._new_painter()
        self._scratch: Painter | None = None  # where l2_after tries strokes, made at its first call
        self.target: np.ndarray | None = None
        self._color_fit: ColorFit | None = None  # made at the first reset, from its target
        self.program = self._blank_program()
        self._canvas = self._agent_view(self._painter.canvas())
        self._steps = 0
        self._pen = (self.config.width / 2, self.config.height / 2)
        self._prev_action = np.zeros(len(self.codec.nvec), np.int64)

    @property
    def conditional(self) -> bool:
        return self._targets is not None

    def _blank_program(self) -> Program:
        config = self.config
        return Program(config.width, config.height, [], config.brush, config.background, config.points_per_stroke)

    def _check_target_source(self, source: TargetSource) -> TargetSource:
        if callable(source):
            return source
        images = np.asarray(source)
        if images.ndim not in (3, 4) or len(images) == 0:
            raise ValueError(
                f"target_source must be a function rng -> image or a non-empty array of images "
                f"(N, height, width[, channels]); got an array of shape {images.shape}."
            )
        self._as_target(images[0])  # fail now, not at the first reset, on the wrong size
        return images

    def _as_target(self, image: np.ndarray) -> np.ndarray:
        """A target as (height, width, 3) uint8, or an error that says what is wrong with it."""
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        expected = (*self.config.canvas_size, 3)
        if image.shape != expected:
            raise ValueError(
                f"Target image has shape {image.shape}; this environment needs {expected} "
                f"(or greyscale {self.config.canvas_size}): resize targets to the canvas size."
            )
        if image.dtype == np.uint8:
            return image
        if np.issubdtype(image.dtype, np.floating) and np.all((image >= 0) & (image <= 1)):
            return np.round(image * 255).astype(np.uint8)
        if image.dtype == np.bool_:
            return image.astype(np.uint8) * 255
        raise ValueError(f"Target images must be uint8 or floats in [0, 1]; got dtype {image.dtype}.")

    def _agent_view(self, canvas: np.ndarray) -> np.ndarray:
        """Average ``render_scale`` x ``render_scale`` blocks down to the canvas size."""
        return agent_view(canvas, self.config.render_scale)

    def l2(self) -> float:
        """Mean squared error between canvas and target, pixels in [0, 1] (conditional mode)."""
        if self.target is None:
            raise RuntimeError("l2() compares with a target: this environment is not conditional.")
        return float(mse(self._canvas, self.target))

    def _observation(self) -> dict[str, np.ndarray]:
        observation = {
            "canvas": self._canvas.copy(),
            "step": np.array([self._steps / self.config.episode_length], np.float32),
            "prev_action": self._prev_action.copy(),
        }
        if self.target is not None:
            observation["target"] = self.target.copy()
        return observation

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        if unknown := set(options) - {"target"}:
            raise ValueError(f"Unknown reset option(s) {sorted(unknown)}; the only option is 'target'.")
        if "target" in options and not self.conditional:
            raise ValueError("reset(options={'target': ...}) needs a conditional environment (a target_source).")
        if "target" in options:
            self.target = self._as_target(options["target"])
        elif callable(self._targets):
            self.target = self._as_target(self._targets(self.np_random))
        elif self._targets is not None:
            self.target = self._as_target(self._targets[self.np_random.integers(len(self._targets))])
        if self.config.fit_color:
            if self._color_fit is None:
                self._color_fit = ColorFit(self.config, self.codec, self.target)
            else:
                self._color_fit.reset(self.target)
        self._painter.reset()
        self._canvas = self._agent_view(self._painter.canvas())
        self.program = self._blank_program()
        self._steps = 0
        self._pen = (self.config.width / 2, self.config.height / 2)
        self._prev_action = np.zeros(len(self.codec.nvec), np.int64)
        info = {"l2": self.l2()} if self.target is not None else {}
        return self._observation(), info

    def step(self, action):
        if self._steps >= self.config.episode_length:
            raise RuntimeError(f"The episode ended after {self.config.episode_length} strokes: call reset().")
        action, stroke = self._stroke(action)
        previous_l2 = self.l2() if self.config.reward == "l2-step" else 0.0
        if stroke.pen_down:
            self._painter.draw(stroke)
            self._canvas = self._agent_view(self._painter.canvas())
        self.program.strokes.append(stroke)
        self._pen = stroke.end
        self._prev_action = action
        self._steps += 1
        terminated = self._steps == self.config.episode_length
        info = {"stroke": stroke, "step": self._steps, "action": action.copy()}
        reward = 0.0
        if self.target is not None:
            info["l2"] = l2 = self.l2()
            if self.config.reward == "l2-step":
                reward = previous_l2 - l2
            elif self.config.reward == "l2-final" and terminated:
                reward = -l2
        return self._observation(), reward, terminated, False, info

    def l2_after(self, action) -> float:
        """The mean squared error ``step(action)`` would leave, the environment unchanged.

        A one-step lookahead, for a painter that checks several strokes before it paints one (an
        agent's proposals, ``spiral.agent.Agent.paint_all``). The stroke, its colour fitted as
        ``step`` fits it, is drawn on a scratch canvas, never on the episode's own: the brush that
        paints the episode draws nothing else, so the program replays exactly whatever was tried.
        The figure is exact for brushes without random jitter (the pens the shipped reconstruction
        agents paint with); a jittery brush (``classic/dry_brush``) draws its jitter afresh on the
        scratch canvas, so for it the figure is an estimate: the error of the same stroke with other jitter.
        """
        if self.target is None:
            raise RuntimeError("l2_after() compares with a target: this environment is not conditional.")
        if self._steps >= self.config.episode_length:
            raise RuntimeError(f"The episode ended after {self.config.episode_length} strokes: call reset().")
        _, stroke = self._stroke(action)
        if not stroke.pen_down:
            return self.l2()
        if self._scratch is None:
            self._scratch = self._new_painter()
        self._scratch.surface.restore(self._painter.surface.snapshot())
        self._scratch.draw(stroke)
        return float(mse(self._agent_view(self._scratch.canvas()), self.target))

    def _stroke(self, action) -> tuple[np.ndarray, Stroke]:
        """The validated action and its stroke from the pen, the colour fitted where ``fit_color`` asks."""
        action = self.codec.validate(action)
        stroke = self.codec.stroke(action, self._pen)
        if self._color_fit is not None and stroke.pen_down:
            action = action.copy()  # never the caller's array
            self._color_fit.update(self._canvas)
            self._color_fit.fit(action, self._pen)
            stroke = self.codec.stroke(action, self._pen)
        return action, stroke

    def _new_painter(self) -> Painter:
        config = self.config
        return Painter(config.width, config.height, config.brush, config.background, config.render_scale,
                       config.points_per_stroke)

    def render(self) -> np.ndarray | None:
        """The canvas at the rendering resolution (``render_scale`` times the canvas size)."""
        if self.render_mode == "rgb_array":
            return self._painter.canvas()
        return None

    def close(self) -> None:
        self._painter.close()
        if self._scratch is not None:
            self._scratch.close()
        if self._color_fit is not None:
            self._color_fit.close()
