"""SPIRAL's policy network in plain torch: conv encoder, LSTM core, autoregressive action heads.

The network reads a canvas (and, in conditional mode, the target) with two coordinate
channels, adds an embedding of the previous action, encodes with a small ResNet, keeps memory
in an LSTM, then chooses the stroke one component at a time (flag, end, control, size,
pressure, red, green, blue), each head conditioned on the components already chosen. Spatial
components (end, control) are decoded to a grid of logits by transposed convolutions, from the
LSTM state plus a skip connection from the encoder's feature map.

Sampling returns, besides the actions, the logits every head produced *given the actions
taken*; evaluating those logits on the same actions gives the exact autoregressive
log-probability. ``teacher_forced_logits`` recomputes them during training from the stored
actions, which is what makes the learner's log-probabilities match the sampler's.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spiral.network_config import MAX_PARAMETERS, PRECISIONS, NetworkConfig

SPATIAL = ("end", "control")
MAP = 8  # side of the encoder's feature map, which the spatial heads start from
# The memory layout of the network's convolutions, from the stem on. oneDNN runs them faster on
# channels-last (NHWC) tensors on CPUs, most of all the stem (9 or 10 input channels) and the spatial
# heads' last layer (a single output channel), both slow cases in NCHW; results equal NCHW's up to
# rounding (the discriminator, which reads 3 or 6 channels at 64 px, loses, and stays NCHW).
# benchmarks/learner_step.py measures the network against its NCHW version before this (7806db5).
CONV_MEMORY_FORMAT = torch.channels_last


def check_temperature(temperature: float) -> None:
    """Refuse a sampling temperature that is not a finite number > 0 (0 would be greedy: say so)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"The sampling temperature must be a finite number > 0 (greedy is its limit at 0), "
                         f"got {temperature!r}.")


def bfloat16_supported(device: torch.device) -> bool:
    """Whether ``device`` has bf16 arithmetic: a GPU that supports it, a CPU with oneDNN's bf16 kernels
    (AVX-512 BF16 or AMX); elsewhere bf16 autocast is emulated, and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The context for a training forward pass (its backward follows) in ``precision`` (``PRECISIONS``).

    Under "bfloat16", convolutions, linear layers and the LSTM run in bf16 (about 1.6x on a CPU with
    AMX); their outputs carry 8 bits of mantissa, so callers turn logits back to float32 before
    log-probabilities. A device without bf16 arithmetic is refused, not silently slowed down.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision == "bfloat16" and not bfloat16_supported(device):
        raise ValueError(f"training.precision='bfloat16' needs bf16 arithmetic, which this {device.type} lacks "
                         "(CPUs: AVX-512 BF16 or AMX); train in float32 (training.precision='float32', "
                         "spiral pretrain --precision float32).")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def check_network_size(action_names: tuple[str, ...], action_nvec: tuple[int, ...], grid_size: int,
                       conditional: bool, config: NetworkConfig) -> int:
    """The parameters and buffers of the ``PolicyNetwork`` these arguments build, counted without
    allocating them; a ValueError over ``MAX_PARAMETERS`` (a huge grid, action space or layer)."""
    largest = (*action_nvec, grid_size**2, config.hidden**2, config.channels**2, config.embedding)
    if max(largest) > MAX_PARAMETERS:  # one embedding or layer alone is too large
        size = None  # too large to build even without memory: torch counts in 64 bits
    else:
        with torch.device("meta"), _ShapesOnly():  # no memory for the values, no time on initialising them
            network = PolicyNetwork(action_names, action_nvec, grid_size, conditional, config)
        size = sum(tensor.numel() for tensor in itertools.chain(network.parameters(), network.buffers()))
    if size is None or size > MAX_PARAMETERS:
        count = "more parameters than" if size is None else f"{size:,} parameters, more than"
        raise ValueError(f"its policy network would have {count} the {MAX_PARAMETERS:,} allowed "
                         f"(spiral.network_config.MAX_PARAMETERS): action sizes {list(action_nvec)}, grid {grid_size}, "
                         f"hidden {config.hidden}")
    return size


class _ShapesOnly(torch.overrides.TorchFunctionMode):
    """Skips ``normal_`` (the embeddings' initialisation) in a network built on the meta device to count its
    parameters: there are no values to draw. Its meta kernel, like ``torch.stack``'s, goes through ``torch._refs``,
    whose first use imports ``torch._dynamo``: 2 seconds more for every process that loads an agent to paint."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.init.normal_:
            return inspect.signature(func).bind(*args, **(kwargs or {})).arguments["tensor"]  # as it was
        return func(*args, **(kwargs or {}))


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class SpatialHead(nn.Module):
    """Hidden vector and the encoder's feature map -> grid x grid logits, by transposed convolutions.

    The encoder's map (``MAP`` x ``MAP``) is added to the projection of the hidden vector: a skip
    connection around the fully connected layer and the LSTM. "Paint where the target is and the
    canvas is not" is local in the picture, and a path that keeps space lets the head learn it
    without first squeezing the picture through a vector (as spatial-action agents do).

    With ``fine_channels`` the last layer also reads a grid x grid map from the stem (a U-Net's
    skip at full resolution): an 8 x 8 map says roughly where to paint, the fine map says which
    cell holds the ink; the logits add the two, so the probabilities multiply them.
    """

    def __init__(self, hidden: int, grid: int, channels: int, fine_channels: int = 0):
        super().__init__()
        self.grid, self.channels, self.fine_channels = grid, channels, fine_channels
        self.project = nn.Linear(hidden, channels * MAP * MAP)
        layers, size = [], MAP
        while size < grid:
            layers += [nn.ReLU(), nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)]
            size *= 2
        layers += [nn.ReLU(), nn.Conv2d(channels + fine_channels, 1, 3, padding=1)]
        self.decode = nn.Sequential(*layers)
        self.size = size

    def forward(self, z: torch.Tensor, spatial: torch.Tensor, fine: torch.Tensor | None = None) -> torch.Tensor:
        x = (self.project(z).view(-1, self.channels, MAP, MAP) + spatial).contiguous(memory_format=CONV_MEMORY_FORMAT)
        if fine is None:
            maps = self.decode(x)
            if self.size != self.grid:  # grids that are not powers of two times MAP: resample the map
                maps = F.interpolate(maps, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
            return maps.flatten(1)
        x = self.decode[:-1](x)
        if self.size != self.grid:
            x = F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        # The last layer reads the decoded map and the fine map as one input of channels + fine_channels;
        # a convolution is a sum over input channels, so it runs as two, without concatenating (and
        # copying to channels-last) a full-resolution map of both for every step of the batch.
        last = self.decode[-1]
        weight_coarse, weight_fine = last.weight.split([self.channels, self.fine_channels], dim=1)
        return (F.conv2d(x, weight_coarse, last.bias, padding=1)
                + F.conv2d(fine, weight_fine, padding=1)).flatten(1)


def _spatial_logits(head: SpatialHead, z: torch.Tensor, spatial: torch.Tensor, fine: torch.Tensor | None,
                    origins: torch.Tensor, chosen: list[torch.Tensor]) -> torch.Tensor:
    """``head``'s logits for every row of ``z``, whose row ``j`` reads the maps ``spatial`` and ``fine`` of row
    ``origins[j]``, computed once for each distinct (origin, choices so far), which fix its inputs: the end
    point's head runs on each episode's two flag choices, not on all its proposals, and the control
    point's once for each distinct end point among them."""
    unique, inverse = torch.unique(torch.stack([origins, *chosen], dim=1), dim=0, return_inverse=True)
    first = torch.full((len(unique),), len(z)).scatter_reduce_(0, inverse, torch.arange(len(z)), "amin")
    maps = origins[first]
    return head(z[first], spatial[maps], None if fine is None else fine[maps])[inverse]


def _draw(probabilities: torch.Tensor, generators: Sequence[torch.Generator] | None,
          uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """One choice per row of ``probabilities`` (rows, choices), row ``i`` drawn from ``generators[i]``, or where
    ``uniforms`` (rows,) are given, the choice whose share of the cumulative probability holds ``uniforms[i]``
    (inverse transform sampling: one vectorised pass, where a stream per row costs a call per row)."""
    if uniforms is not None:
        cumulative = probabilities.cumsum(-1)
        scaled = uniforms[:, None] * cumulative[:, -1:]  # below the total: never a choice of zero probability
        return torch.searchsorted(cumulative, scaled, right=True).squeeze(-1).clamp_max(probabilities.shape[-1] - 1)
    if generators is None:
        return torch.multinomial(probabilities, 1).squeeze(-1)
    return torch.cat([torch.multinomial(row[None], 1, generator=stream)
                      for row, stream in zip(probabilities, generators, strict=True)]).squeeze(-1)


class PolicyNetwork(nn.Module):
    """The SPIRAL agent for one environment's action space.

    Args:
        action_names, action_nvec: the environment's components and their sizes, in order
            (``envs.ActionCodec.names`` and ``.nvec``).
        grid_size: the environment's grid (spatial heads decode to grid x grid).
        conditional: whether observations carry a target image.
    """

    def __init__(self, action_names: tuple[str, ...], action_nvec: tuple[int, ...], grid_size: int,
                 conditional: bool, config: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.names, self.nvec = tuple(action_names), tuple(int(n) for n in action_nvec)
        self.config, self.conditional, self.grid = config, conditional, grid_size
        c, hidden, fine = config.channels, config.hidden, config.fine_channels
        if config.pen_map and "end" not in self.names:
            raise ValueError(f"pen_map needs an 'end' action component (where the pen goes), got {self.names}.")
        in_channels = (6 if conditional else 3) + 2 + int(config.pen_map)
        self.stem = nn.Conv2d(in_channels, c, 5, padding=2)
        self.fine = nn.Sequential(nn.ReLU(), nn.Conv2d(c, fine, 3, padding=1), nn.ReLU()) if fine else None
        self.prev_action_embeddings = nn.ModuleList(nn.Embedding(n, config.embedding) for n in self.nvec)
        self.prev_action_mlp = nn.Sequential(
            nn.Linear(config.embedding * len(self.nvec) + 1, hidden), nn.ReLU(), nn.Linear(hidden, c)
        )
        downs, size = [], config.input_size
        while size > 8:
            downs += [nn.ReLU(), nn.Conv2d(c, c, 4, stride=2, padding=1)]
            size //= 2
        self.encoder = nn.Sequential(*downs, *(ResBlock(c) for _ in range(config.res_blocks)), nn.ReLU())
        self.fc = nn.Linear(c * size * size, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.heads = nn.ModuleList(
            SpatialHead(hidden, grid_size, c, fine) if name in SPATIAL else nn.Linear(hidden, n)
            for name, n in zip(self.names, self.nvec)
        )
        self.chosen_embeddings = nn.ModuleList(nn.Embedding(n, config.embedding) for n in self.nvec)
        self.condition = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden + config.embedding, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            for _ in self.nvec
        )
        self.value_head = nn.Linear(hidden, 1)
        if self.names[0] == "flag":
            with torch.no_grad():
                self.heads[0].bias.copy_(torch.tensor([0.0, config.flag_paint_bias]))
        self.register_buffer("coordinates", self._coordinates(config.input_size), persistent=False)

    @staticmethod
    def _coordinates(size: int) -> torch.Tensor:
        """(2, size, size): y, x in [-1, 1]; filled in, not stacked, for the reason ``_ShapesOnly`` gives."""
        axis = torch.linspace(-1.0, 1.0, size)
        coordinates = torch.empty(2, size, size)
        coordinates[0], coordinates[1] = torch.meshgrid(axis, axis, indexing="ij")
        return coordinates

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch_size, self.config.hidden, device=self.coordinates.device)
        return zeros, zeros.clone()

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, input_size, input_size) in [0, 1]."""
        x, size = images.permute(0, 3, 1, 2).float() / 255.0, self.config.input_size
        if x.shape[-2:] == (size, size):
            return x
        if x.shape[-2] % size == 0 and x.shape[-1] % size == 0:  # what "area" does then, faster
            return F.avg_pool2d(x, (x.shape[-2] // size, x.shape[-1] // size))
        return F.interpolate(x, size=(size, size), mode="area")

    def _pen_map(self, previous: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """(N, 1, input_size, input_size): 1 on the grid cell the pen is in, from the previous action's end
        (the first step's pen is at the canvas centre), resampled to the network's input."""
        grid = self.grid
        cells = previous[:, self.names.index("end")].clone()
        cells[step.reshape(-1) == 0] = (grid // 2) * grid + grid // 2
        pen = F.one_hot(cells, grid * grid).float().view(-1, 1, grid, grid)
        size = self.config.input_size
        if grid == size:
            return pen
        return F.interpolate(pen, size=(size, size), mode="area" if grid > size else "nearest")

    def features(self, observation: dict[str, torch.Tensor], state: tuple[torch.Tensor, torch.Tensor]
                 ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Observations (B, T, ...) and LSTM state (B, hidden) each -> features and the new state.

        Features are the LSTM's output (B, T, hidden) followed by the encoder's flattened
        ``MAP`` x ``MAP`` feature map of the same step, which the spatial heads read, and with
        ``fine_channels`` the flattened grid x grid map of the fine path.
        """
        batch, steps = observation["canvas"].shape[:2]
        flat = {key: value.reshape(batch * steps, *value.shape[2:]) for key, value in observation.items()}
        pictures = [self._images(flat["canvas"])]
        if self.conditional:
            pictures.append(self._images(flat["target"]))
        pictures.append(self.coordinates.expand(batch * steps, -1, -1, -1))
        previous = flat["prev_action"].long()
        if self.config.pen_map:
            pictures.append(self._pen_map(previous, flat["step"]))
        x = self.stem(torch.cat(pictures, dim=1).contiguous(memory_format=CONV_MEMORY_FORMAT))
        embedded = [embedding(previous[:, i]) for i, embedding in enumerate(self.prev_action_embeddings)]
        context = self.prev_action_mlp(torch.cat([*embedded, flat["step"].float().reshape(-1, 1)], dim=1))
        x = x + context[:, :, None, None]
        parts = []
        if self.fine is not None:
            fine = self.fine(x)
            if fine.shape[-1] != self.grid:
                fine = F.interpolate(fine, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
            parts.append(fine.reshape(batch, steps, -1))
        x = self.encoder(x)
        spatial = x if x.shape[-1] == MAP else F.interpolate(x, size=(MAP, MAP), mode="area")
        x = F.relu(self.fc(x.flatten(1))).view(batch, steps, -1)
        h, c = state
        x, (h, c) = self.lstm(x, (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
        return torch.cat([x, spatial.reshape(batch, steps, -1), *parts], dim=-1), (h.squeeze(0), c.squeeze(0))

    def value(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_head(features[..., :self.config.hidden]).squeeze(-1)

    def _autoregress(self, features: torch.Tensor, actions: torch.Tensor | None, greedy: bool,
                     generators: Sequence[torch.Generator] | None = None, temperature: float = 1.0,
                     uniforms: torch.Tensor | None = None, origins: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Walk the heads in order; sample (or take ``actions``) and condition on each choice.

        ``generators``, where given, hold one random stream per row of features (per episode): each
        row's choice is drawn from its own, so a seeded episode paints the same strokes whichever
        others share its batch (``spiral.agent.Agent.paint_all``). ``uniforms`` (rows, heads), where
        given instead, are the draws themselves (``propose``).

        ``origins`` (rows,), where given, draws that many rows (``propose``'s copies of its episodes), row
        ``j`` from the features of row ``origins[j]``, which are never copied: rows with the same origin
        and the same choices so far have the same ``z``, so each spatial head, the network's costliest
        part, runs once for them (``_spatial_logits``).
        """
        hidden, channels = self.config.hidden, self.config.channels
        leading = features.shape[:-1] if origins is None else origins.shape
        flat = features.reshape(-1, features.shape[-1])
        end = hidden + channels * MAP * MAP
        z, spatial, chosen, logits = flat[:, :hidden], flat[:, hidden:end].view(-1, channels, MAP, MAP), [], []
        fine = None
        if self.fine is not None:  # one copy to the heads' layout, which both spatial heads read
            fine = flat[:, end:].view(-1, self.config.fine_channels, self.grid, self.grid)
            fine = fine.contiguous(memory_format=CONV_MEMORY_FORMAT)
        if origins is not None:
            z = z[origins]
        if actions is not None:
            actions = actions.reshape(-1, actions.shape[-1])
        for i, (name, head) in enumerate(zip(self.names, self.heads)):
            if name not in SPATIAL:
                component_logits = head(z)
            elif origins is None:
                component_logits = head(z, spatial, fine)
            else:
                component_logits = _spatial_logits(head, z, spatial, fine, origins, chosen)
            if actions is not None:
                choice = actions[..., i].long()
            elif greedy:
                choice = component_logits.argmax(-1)
            else:
                # Dividing by 1.0 is exact: at the default temperature a seed samples what it always has.
                probabilities = (component_logits / temperature).softmax(-1)
                choice = _draw(probabilities, generators, None if uniforms is None else uniforms[:, i])
            logits.append(component_logits)
            chosen.append(choice)
            z = z + self.condition[i](torch.cat([z, self.chosen_embeddings[i](choice)], dim=-1))
        return torch.stack(chosen, dim=-1).view(*leading, -1), torch.cat(logits, dim=-1).view(*leading, -1)

    def sample(self, features: torch.Tensor, greedy: bool = False, generators: Sequence[torch.Generator] | None = None,
               temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Actions (..., components), their log-probabilities (...) and the logits behind them.

        ``generators``: one random stream per row of ``features`` (``_autoregress``), or None for torch's own.

        ``temperature`` below 1 sharpens each head's distribution before sampling (Sketch-RNN's knob:
        likelier, less varied strokes); the log-probabilities and logits stay the policy's own.
        """
        actions, logits = self._autoregress(features, None, greedy, generators, temperature)
        return actions, self.log_prob(logits, actions), logits

    def propose(self, features: torch.Tensor, count: int, generators: Sequence[torch.Generator],
                temperature: float = 1.0) -> torch.Tensor:
        """``count`` sampled actions for each row of ``features`` (rows, 1, features): (count, rows, components).

        Drawn from the distribution ``sample`` draws from, in one pass over ``count`` x rows: each row's
        random numbers, all heads' at once, come from its own stream, ``generators[row]``, so an
        episode's proposals do not depend on the others in its batch (``Agent.paint_all``). A policy
        repeats itself, so each spatial head runs once per distinct row and choices so far
        (``_spatial_logits``): 3-4.5x faster than on every proposal, the same draws (benchmarks/proposals.py).
        """
        rows, heads = features.shape[0], len(self.names)
        uniforms = torch.stack([torch.rand((count, heads), generator=stream) for stream in generators], dim=1)
        actions, _ = self._autoregress(features.reshape(rows, -1), None, False, None, temperature,
                                       uniforms.reshape(count * rows, heads), torch.arange(rows).repeat(count))
        return actions.view(count, rows, heads)

    def training_pass(self, observation: dict[str, torch.Tensor], state: tuple[torch.Tensor, torch.Tensor],
                      actions: torch.Tensor, precision: str = "float32"
                      ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """A learner's pass over stored steps in ``precision`` (``autocast``): the teacher-forced logits,
        the features and the new LSTM state, all returned in float32, so that log-probabilities, values
        and V-trace are computed in float32 from what the pass rounded."""
        with autocast(precision, self.coordinates.device):
            features, (h, c) = self.features(observation, state)
            logits = self.teacher_forced_logits(features, actions)
        return logits.float(), features.float(), (h.float(), c.float())

    def teacher_forced_logits(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The logits each head gives when the earlier components are the ``actions`` taken."""
        return self._autoregress(features, actions, greedy=False)[1]

    def split(self, logits: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(logits, self.nvec, dim=-1))

    def log_prob(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Sum over components of log p(a_i | a_<i), from teacher-forced or sampled logits."""
        parts = [
            torch.distributions.Categorical(logits=part).log_prob(actions[..., i].long())
            for i, part in enumerate(self.split(logits))
        ]
        return torch.stack(parts, dim=-1).sum(-1)

    def divergences(self, logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """Per-component KL(these logits' policy || ``other``'s), (..., components); each component's
        distributions are conditioned on the same earlier choices (both teacher forced on one action)."""
        return torch.stack([F.kl_div(theirs.log_softmax(-1), ours.log_softmax(-1), log_target=True,
                                     reduction="none").sum(-1)
                            for ours, theirs in zip(self.split(logits), self.split(other))], -1)

    def entropies(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-component entropy (..., components), each conditioned on the earlier choices."""
        return torch.stack([torch.distributions.Categorical(logits=part).entropy() for part in self.split(logits)], -1)
