"""The policy network's settings: its sizes (``NetworkConfig``) and arithmetic (``PRECISIONS``).

Kept out of ``spiral.policy``, which builds the network with torch, so that an experiment's
settings are checked before torch is imported: a mistake on the command line is refused at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Integral, Real

# The learner's arithmetic (``training.precision``): float32, or bfloat16 autocast (see ``autocast``).
PRECISIONS = ("float32", "bfloat16")

# Bounds on the size of a network, so that a network described by an untrusted file (an agent's
# agent.json) is refused before its memory is asked for. The paper's network (spiral(), grid 32)
# has 3.7 million parameters, and its first feature map 32 x 64 x 64 values per image.
MAX_PARAMETERS = 100_000_000  # parameters and buffers: 400 MB of float32
MAX_FEATURE_MAP = 2**26  # channels x input_size**2: 256 MB of float32 per image for the stem's output
MAX_RES_BLOCKS = 100  # each is a module to build: a million of them take minutes before any check


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the policy network. ``small()`` suits CPUs, ``spiral()`` is the paper's size."""

    input_size: int = 32  # the canvas is area-resized to this many pixels for the network
    channels: int = 16
    res_blocks: int = 2
    hidden: int = 128  # fully connected layer and LSTM
    embedding: int = 16  # per action component
    flag_paint_bias: float = 2.0  # initial logit of "paint" over "move": start by painting
    # Detail for the spatial heads (0 and False: the original network, which shipped agents use):
    fine_channels: int = 0  # a full-resolution path from the stem to the spatial heads' last layer
    pen_map: bool = False  # an input channel marking the grid cell the pen is in

    def __post_init__(self) -> None:
        problems = []
        for name in ("input_size", "channels", "res_blocks", "hidden", "embedding", "fine_channels"):
            value, low = getattr(self, name), 0 if name in ("res_blocks", "fine_channels") else 1
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                problems.append(f"{name} must be an integer >= {low}, got {value!r}")
        bias = self.flag_paint_bias
        if isinstance(bias, bool) or not isinstance(bias, Real) or not math.isfinite(bias):
            problems.append(f"flag_paint_bias must be a finite number, got {bias!r}")
        if not isinstance(self.pen_map, bool):
            problems.append(f"pen_map must be true or false, got {self.pen_map!r}")
        if not problems:
            if self.res_blocks > MAX_RES_BLOCKS:
                problems.append(f"res_blocks must be at most {MAX_RES_BLOCKS}, got {self.res_blocks}")
            if max(self.channels, self.fine_channels) * self.input_size**2 > MAX_FEATURE_MAP:
                problems.append(f"channels x input_size**2 must be at most {MAX_FEATURE_MAP:,} (the stem's feature "
                                f"map per image), got {self.channels} x {self.input_size}**2")
        if problems:
            raise ValueError("Invalid NetworkConfig: " + "; ".join(problems) + ".")

    @classmethod
    def small(cls) -> NetworkConfig:
        return cls()

    @classmethod
    def spiral(cls) -> NetworkConfig:
        return cls(input_size=64, channels=32, res_blocks=8, hidden=256, embedding=32)

    def to_dict(self) -> dict:
        return asdict(self)
