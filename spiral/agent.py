"""The inference API: load an exported agent and let it paint, without Ray.

An exported agent is a folder of plain files that anyone can inspect:

- ``agent.json``: what the agent paints with and was trained on (environment settings, network
  sizes, action space, dataset, training counters): an ``AgentManifest`` (``spiral.manifest``);
- ``policy.pt`` and ``discriminator.pt``: ``state_dict``s saved with ``torch.save``, loaded with
  ``torch.load(weights_only=True)``: a file that is not plain tensors is refused, never unpickled;
- ``mix_classifier.pt``, for a generator that corrects its class mix (``spiral.class_mix``): the same kind
  of file.

``write_agent`` writes such a folder atomically (``envs.storage``); ``load_agent`` reads one back;
``write_average`` writes the mean of several agents' weights as one.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageOps

from envs import PaintConfig, PaintEnv, Program, mse
from envs.actions import PAINT
from envs.color_fit import refit_colors
from envs.painter import agent_view
from envs.storage import write_file, write_folder
from spiral.images import flatten
from spiral.manifest import AgentManifest
from spiral.network_config import NetworkConfig
from spiral.policy import PolicyNetwork, check_network_size, check_temperature
from spiral.search import hill_climb

if TYPE_CHECKING:  # spiral.classifier judges agents' paintings: it imports this module
    from spiral.classifier import Classifier

MAX_SEED = 2**63 - 1  # torch's generators take a signed 64-bit seed
# Episodes per network pass in Agent.paint_all: enough that the pass costs little per frame on two cores,
# few enough that the SPIRAL-size network's activations stay small.
PAINT_BATCH = 64


@dataclass
class Episode:
    """One painting: its stroke program, every canvas along the way, and the target if any."""

    program: Program
    frames: list[np.ndarray]  # the blank canvas, then the canvas after each stroke
    target: np.ndarray | None = None
    l2: float | None = None  # mean squared error to the target, pixels in [0, 1]
    actions: list[list[int]] = field(default_factory=list)
    draws: int = 1  # paintings its seed took: more than 1 where a generator's class-mix correction redrew it

    @property
    def canvas(self) -> np.ndarray:
        return self.frames[-1]


class Agent:
    """A trained (or untrained) policy with its manifest: the environment settings it paints with,
    the data it was trained on."""

    def __init__(self, policy: PolicyNetwork, manifest: AgentManifest, mix_classifier: Classifier | None = None):
        """``mix_classifier``: the classifier that names a generator's classes, where its manifest names a
        ``class_mix`` (``spiral.class_mix``); None for every other agent."""
        if (mix_classifier is None) != (manifest.class_mix is None):
            raise ValueError("An agent has a mix classifier exactly when its manifest names a class_mix.")
        self.policy = policy.eval()
        self.manifest = manifest
        self.mix_classifier = None if mix_classifier is None else mix_classifier.eval()

    @property
    def paint_config(self) -> PaintConfig:
        return self.manifest.env

    @property
    def conditional(self) -> bool:
        return self.policy.conditional

    @property
    def temperature(self) -> float:
        """The temperature its sampled paintings are drawn at unless a caller names another (agent.json's)."""
        return self.manifest.temperature

    def sampling_temperatures(self, temperature: float | None = None, first_stroke_temperature: float | None = None
                              ) -> tuple[float, float]:
        """The temperatures a painting is sampled at, (first stroke, later strokes): those requested, or where None
        the agent's own (agent.json's). The first stroke's own is the later strokes' unless agent.json names one
        (``AgentManifest.first_stroke_temperature``), so a caller who names only ``temperature`` keeps a
        generator's first stroke, which chooses what it paints, as it shipped."""
        later = self.temperature if temperature is None else temperature
        own_first = self.manifest.first_stroke_temperature
        first = first_stroke_temperature if first_stroke_temperature is not None else (
            later if own_first is None else own_first)
        check_temperature(first)
        check_temperature(later)
        return first, later

    def prepare_target(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """Any image as the agent sees targets: canvas-sized uint8 RGB, greyscale if it was trained so.

        An array must be uint8 pixels, (H, W) grey or (H, W, 3 or 4) colour; anything else is a ValueError.
        """
        picture = image if isinstance(image, Image.Image) else _array_image(image)
        if picture.width < 1 or picture.height < 1:
            raise ValueError(f"The target image is {picture.width}x{picture.height} pixels: nothing to paint.")
        color = self.manifest.data.color
        background = tuple(self.paint_config.background)
        picture = flatten(picture, background).convert("RGB" if color else "L")  # transparency: the canvas shows
        height, width = self.paint_config.canvas_size
        # Keep the aspect ratio: a very wide or tall image is letterboxed with the canvas colour.
        picture = ImageOps.pad(picture, (width, height), Image.Resampling.LANCZOS,
                               color=background if color else round(sum(background) / 3))
        array = np.asarray(picture)
        return array if color else np.repeat(array[..., None], 3, axis=-1)

    def paint(self, target: np.ndarray | Image.Image | None = None, seed: int | None = None,
              greedy: bool = False, temperature: float | None = None, proposals: int = 1, refine: int = 0,
              first_stroke_temperature: float | None = None) -> Episode:
        """Paint one episode; conditional agents need a ``target`` (any size: it is resized).

        ``greedy`` takes each head's likeliest choice; otherwise the strokes are sampled at
        ``temperature`` (below 1: likelier, less varied strokes; ``PolicyNetwork.sample``), by default
        the agent's own (``self.temperature``), the first stroke at ``first_stroke_temperature``
        (``sampling_temperatures``). Without a ``seed``, a fresh one is drawn.
        ``proposals`` > 1 (conditional agents): each step paints the best of that many strokes the
        policy proposes, each checked against the target before one is painted (``paint_all``), and
        ``refine`` > 0 hill-climbs the chosen stroke first (``paint_all``).
        """
        if self.conditional and target is None:
            raise ValueError("This agent reconstructs targets: pass target=<image>.")
        if not self.conditional and target is not None:
            raise ValueError("This agent paints from scratch and takes no target.")
        return self.paint_all(None if target is None else [target], [seed], greedy, temperature, proposals,
                              refine, first_stroke_temperature)[0]

    @torch.no_grad()
    def paint_all(self, targets: Sequence[np.ndarray | Image.Image] | None = None,
                  seeds: Sequence[int | None] | None = None, greedy: bool = False,
                  temperature: float | None = None, proposals: int = 1, refine: int = 0,
                  first_stroke_temperature: float | None = None) -> list[Episode]:
        """Paint many episodes together: one network pass per step for up to ``PAINT_BATCH`` of them.

        A conditional agent paints one episode per target (seeds 0, 1, ... unless given, one per
        target); one that paints from scratch, one per seed. Episode ``i`` is ``paint(targets[i],
        seeds[i])`` up to the last bits of float arithmetic: a network pass over a batch rounds
        differently from a pass over one image, which flips a greedy choice only at a near tie and a
        sampled one only at the very edge of a draw (each episode samples from its own seeded stream).
        For metrics over many images (checkpoints, ``spiral eval``) this is 5-10x faster than
        painting them one at a time (``benchmarks/painting.py``).

        ``proposals`` > 1, for a conditional agent: at each step the policy proposes that many
        strokes, its own choice (greedy or sampled, as asked) first and the others sampled at
        ``temperature``, and the one that leaves the lowest error to the target is painted
        (``PaintEnv.l2_after``; a tie keeps the policy's own). A search over the agent's own
        strokes: far fewer renders than a search over random ones, and each a stroke the agent
        would paint. Each proposal costs about what a step of the agent does: 8 take about 7x the time.

        ``refine`` > 0, for a conditional agent: the stroke chosen (a painting one; a pen-up move stays
        as chosen) is then hill-climbed that many rounds at most, as the search refines its best
        candidate (``spiral.search.hill_climb``: its end or control point one cell away, its size one
        step, checked the same way). Up to 18 renders a round, though the climb mostly stops early: on
        photo crops 4 rounds cost about what 30 more proposals do, and 16 proposals refined 4 rounds beat
        64 proposals at 0.7x the time (``benchmarks/stroke_choice.py``).

        An agent that paints in colours fitted to its target (``env.fit_color``) fits each stroke's colour
        as it paints it, for its whole footprint; once the painting is done, every stroke's colour is
        re-chosen jointly for the canvas as it ended (``envs.color_fit.refit_colors``: a background stroke
        takes the colour of what stays visible of it), and the painting keeps the new colours where they
        lower its error. The episode's program, frames and actions are the refitted painting's, so it
        replays as shown; its strokes are where the agent put them.

        A generator with a class-mix correction (``spiral.class_mix``) redraws the sampled paintings it
        rejects from seeds derived from their own (``Episode.draws`` counts the paintings), at the
        temperatures the correction was measured at, its own; at others, and greedy (which paints the same
        whatever the seed), it paints as the generator alone does.
        """
        temperatures = self.sampling_temperatures(temperature, first_stroke_temperature)
        check_proposals(proposals, self.conditional, refine)
        if self.conditional:
            if targets is None:
                raise ValueError("This agent reconstructs targets: pass targets=<images>.")
            if isinstance(targets, Image.Image) or (isinstance(targets, np.ndarray) and targets.ndim == 3
                                                    and targets.shape[-1] in (3, 4)):
                raise ValueError("targets is one image, not a sequence of them: pass [image], or use paint().")
            prepared: list[np.ndarray | None] = [self.prepare_target(target) for target in targets]
            seeds = list(range(len(prepared)) if seeds is None else seeds)
            if len(seeds) != len(prepared):
                raise ValueError(f"Got {len(seeds)} seeds for {len(prepared)} targets: give one per target.")
        else:
            if targets is not None:
                raise ValueError("This agent paints from scratch and takes no target.")
            if seeds is None:
                raise ValueError("An agent that paints from scratch needs seeds=<one per painting>.")
            seeds = list(seeds)
            prepared = [None] * len(seeds)
        for seed in seeds:
            _check_seed(seed)
        if self.mix_classifier is not None and not greedy and temperatures == self.sampling_temperatures():
            return self._paint_mixed([_random_seed() if seed is None else seed for seed in seeds], temperatures)
        return self._paint_batches(prepared, seeds, greedy, temperatures, proposals, refine)

    def _paint_batches(self, prepared: list[np.ndarray | None], seeds: list[int | None], greedy: bool,
                       temperatures: tuple[float, float], proposals: int = 1, refine: int = 0) -> list[Episode]:
        return [episode for start in range(0, len(seeds), PAINT_BATCH)
                for episode in self._paint_batch(prepared[start:start + PAINT_BATCH], seeds[start:start + PAINT_BATCH],
                                                 greedy, temperatures, proposals, refine)]

    def _paint_mixed(self, seeds: list[int], temperatures: tuple[float, float]) -> list[Episode]:
        """A generator's samples with its class-mix correction: each seed's painting, painted again from
        ``redraw_seed(seed, 1)``, ``(seed, 2)`` ... while the correction rejects it, up to its tries."""
        from spiral.class_mix import kept, redraw_seed

        class_mix = self.manifest.class_mix
        episodes = self._paint_batches([None] * len(seeds), seeds, False, temperatures)
        pending = list(range(len(seeds)))
        for attempt in range(1, class_mix.tries):
            canvases = np.stack([episodes[i].canvas for i in pending])
            keep = kept(self.mix_classifier, class_mix, canvases, [seeds[i] for i in pending], attempt - 1)
            pending = [i for i, keep_it in zip(pending, keep) if not keep_it]
            if not pending:
                break
            redrawn = self._paint_batches([None] * len(pending), [redraw_seed(seeds[i], attempt) for i in pending],
                                          False, temperatures)
            for i, episode in zip(pending, redrawn):
                episodes[i] = dataclasses.replace(episode, draws=attempt + 1)
        return episodes

    def _paint_batch(self, prepared: list[np.ndarray | None], seeds: list[int | None], greedy: bool,
                     temperatures: tuple[float, float], proposals: int, refine: int) -> list[Episode]:
        """Episodes painted in lockstep, each in its own ``PaintEnv``, the network run on all at once;
        ``temperatures``: the first stroke's and the later strokes'."""
        seeds = [_random_seed() if seed is None else seed for seed in seeds]
        envs = [PaintEnv(self.paint_config, target_source=None if target is None else target[None])
                for target in prepared]
        try:
            observations = [env.reset(seed=seed, options=None if target is None else {"target": target})[0]
                            for env, seed, target in zip(envs, seeds, prepared)]
            generators = [torch.Generator().manual_seed(seed) for seed in seeds]
            state = self.policy.initial_state(len(envs))
            frames, actions = [[observation["canvas"]] for observation in observations], [[] for _ in envs]
            for step in range(self.paint_config.episode_length):  # every episode ends after as many steps
                temperature = temperatures[0] if step == 0 else temperatures[1]
                batch = {key: torch.as_tensor(np.stack([observation[key] for observation in observations]))[:, None]
                         for key in observations[0]}
                features, state = self.policy.features(batch, state)
                chosen = self.policy.sample(features, greedy, generators, temperature)[0][:, 0].numpy()
                if proposals > 1:
                    chosen = _best_proposals(envs, chosen,
                                             list(self.policy.propose(features, proposals - 1, generators,
                                                                      temperature).numpy()))
                if refine:
                    chosen = _refined(envs, chosen, refine)
                steps = [env.step(action) for env, action in zip(envs, chosen)]
                observations = [observation for observation, *_ in steps]
                for episode, (observation, *_, info) in enumerate(steps):
                    frames[episode].append(observation["canvas"])
                    actions[episode].append(info["action"].tolist())  # as painted (fit_color sets the colour)
            episodes = [Episode(env.program, frames[i], target, None if target is None else env.l2(), actions[i])
                        for i, (env, target) in enumerate(zip(envs, prepared))]
            if self.paint_config.fit_color:
                episodes = [_with_colors_refit(episode, env) for episode, env in zip(episodes, envs)]
            return episodes
        finally:
            for env in envs:
                env.close()


def temperature_label(temperatures: tuple[float, float]) -> str:
    """How a painting sampled at ``temperatures`` (``Agent.sampling_temperatures``) is described: "" at the policy's
    own distribution, else "temperature T", and where the first stroke differs, ", the first stroke at F"."""
    first, later = temperatures
    if first == later:
        return "" if later == 1 else f"temperature {later:g}"
    return f"temperature {later:g}, the first stroke at {first:g}"


def stroke_choice_label(proposals: int, refine: int) -> str:
    """How a painting whose strokes were checked (``Agent.paint_all``'s ``proposals`` and ``refine``) is described:
    "" for the agent alone, else ", best of K proposals a stroke" and ", refined R rounds" (one round: "round")."""
    label = f", best of {proposals} proposals a stroke" if proposals > 1 else ""
    if refine:
        label += f", refined {refine} round{'s' if refine > 1 else ''}"
    return label


def check_proposals(proposals: int, conditional: bool, refine: int = 0) -> None:
    """A ValueError unless ``proposals`` is a count of strokes to choose from, and ``refine`` a count of hill-climbing
    rounds, that this agent can check against a target (``Agent.paint_all``)."""
    if isinstance(proposals, bool) or not isinstance(proposals, (int, np.integer)) or proposals < 1:
        raise ValueError(f"proposals must be a whole number of strokes, 1 or more, got {proposals!r}.")
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
        raise ValueError(f"refine must be a whole number of hill-climbing rounds, 0 or more, got {refine!r}.")
    if (proposals > 1 or refine) and not conditional:
        raise ValueError("Proposals and refining are checked against a target: an agent that paints from scratch has "
                         "none, so it paints with proposals=1 and refine=0.")


def _best_proposals(envs: list[PaintEnv], own: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """For each episode, of its policy's own action (``own[i]``) and the other proposals (``others[k][i]``), the
    one that leaves the lowest error to the target; the first of equals, so a tie keeps the policy's own.

    A policy proposes the same stroke more than once (its first stroke above all): each distinct stroke is
    drawn on the scratch canvas once (``_stroke_key``)."""
    chosen = []
    for i, env in enumerate(envs):
        candidates = [own[i], *(proposal[i] for proposal in others)]
        keys, errors = [_stroke_key(env, action) for action in candidates], {}
        for key, action in zip(keys, candidates):
            if key not in errors:
                errors[key] = env.l2_after(action)
        chosen.append(candidates[int(np.argmin([errors[key] for key in keys]))])
    return np.stack(chosen)


def _stroke_key(env: PaintEnv, action: np.ndarray) -> bytes:
    """What decides the stroke ``action`` paints in ``env``: the action, less its colour where the environment
    fits the colour to the target (``PaintConfig.fit_color``)."""
    action = np.array(action, np.int64)
    if env.config.fit_color:
        action[[env.codec.index[channel] for channel in ("red", "green", "blue")]] = 0
    return action.tobytes()


def _with_colors_refit(episode: Episode, env: PaintEnv) -> Episode:
    """The finished ``episode`` of ``env`` with its strokes' colours re-chosen jointly (``refit_colors``) where that
    lowers its error to the target, repainted from its program; else the episode as it is."""
    config = env.config
    program = refit_colors(episode.program, env.target, config)
    frames = [agent_view(frame, config.render_scale) for frame in program.frames(config.render_scale)]
    l2 = float(mse(frames[-1], env.target))
    if l2 >= episode.l2:
        return episode
    return Episode(program, frames, episode.target, l2, [env.codec.encode(stroke).tolist() for stroke in program.strokes])


def _refined(envs: list[PaintEnv], chosen: np.ndarray, rounds: int) -> np.ndarray:
    """Each episode's chosen stroke hill-climbed ``rounds`` times at most against its target (``PaintEnv.l2_after``);
    a pen-up move stays as chosen."""
    refined = []
    for env, action in zip(envs, chosen):
        flag = env.codec.index.get("flag")
        if flag is None or action[flag] == PAINT:
            action, _ = hill_climb(env.codec, action, env.l2_after(action), env.l2_after, rounds)
        refined.append(action)
    return np.stack(refined)


def paint_many(agent: Agent, targets: np.ndarray, seeds: Sequence[int], greedy: bool = True, proposals: int = 1,
               workers: int = 1, refine: int = 0) -> Iterator[tuple[list[int], list[Episode], float]]:
    """Paint ``targets[i]`` with ``seeds[i]``, ``PAINT_BATCH`` at a time, as files of paintings do (``spiral programs``,
    ``spiral demos --teacher``): yields each batch's positions in ``targets``, its episodes (each with its last
    canvas only, ``frames[-1:]``) and the seconds it took, as the batches finish.

    Here, or in a pool of ``workers`` processes. A painting depends only on its target, the weights and its seed
    (up to a near tie, ``paint_all``), so the pool paints what this process would. Torch runs on one thread
    (``one_torch_thread``); fork where there is one: the workers inherit the agent, and with one torch thread
    each they never enter an OpenMP parallel region, the thing a forked torch must not do.
    """
    batches = [list(range(start, min(start + PAINT_BATCH, len(targets)))) for start in range(0, len(targets),
                                                                                          PAINT_BATCH)]
    jobs = ((batch, targets[batch], [seeds[position] for position in batch]) for batch in batches)
    settings = (greedy, proposals, refine)
    with one_torch_thread():
        if workers == 1 or len(batches) <= 1:
            yield from (_paint_job(agent, settings, job) for job in jobs)
            return
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with context.Pool(min(workers, len(batches)), _start_painter, (agent, settings)) as pool:
            yield from pool.imap_unordered(_paint_in_worker, jobs)


def _paint_job(agent: Agent, settings: tuple[bool, int, int], job: tuple[list[int], np.ndarray, list[int]]
               ) -> tuple[list[int], list[Episode], float]:
    positions, targets, seeds = job
    greedy, proposals, refine = settings
    start = time.perf_counter()
    episodes = agent.paint_all(targets, seeds, greedy, proposals=proposals, refine=refine)
    return positions, [dataclasses.replace(episode, frames=episode.frames[-1:]) for episode in episodes], \
        time.perf_counter() - start


_painter: tuple[Agent, tuple[bool, int, int]] | tuple[()] = ()  # a pool worker's agent and settings (paint_many)


def _start_painter(agent: Agent, settings: tuple[bool, int, int]) -> None:
    global _painter
    torch.set_num_threads(1)
    _painter = (agent, settings)


def _paint_in_worker(job: tuple[list[int], np.ndarray, list[int]]) -> tuple[list[int], list[Episode], float]:
    return _paint_job(*_painter, job)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread inside, as it was after: painting one image at a time through a network this
    small gains nothing from more, and where the other cores are busy (a training job, search workers)
    they cost 10x or more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_agent(folder: str | Path, policy_state: dict[str, torch.Tensor], discriminator_state: dict[str, torch.Tensor],
                manifest: AgentManifest, mix_classifier_state: dict[str, torch.Tensor] | None = None,
                provenance: Path | None = None) -> Path:
    """Write an agent folder atomically: a reader sees the old folder or the new one, never half.

    ``mix_classifier_state``: the classifier of a generator whose manifest names a ``class_mix``.
    ``provenance``: an agent folder whose ``experiment.json`` and TensorBoard scalars (``tb/``), where it has them,
    go with the new agent, which was made from its weights (``spiral class-mix``)."""
    if (mix_classifier_state is None) != (manifest.class_mix is None):
        raise ValueError("An agent has a mix classifier exactly when its manifest names a class_mix.")

    def fill(staging: Path) -> None:
        torch.save(policy_state, staging / "policy.pt")
        torch.save(discriminator_state, staging / "discriminator.pt")
        if mix_classifier_state is not None:
            torch.save(mix_classifier_state, staging / "mix_classifier.pt")
        (staging / "agent.json").write_text(json.dumps(manifest.to_dict(), indent=2))
        if provenance is not None and (provenance / "experiment.json").is_file():
            shutil.copy2(provenance / "experiment.json", staging / "experiment.json")
        if provenance is not None and (provenance / "tb").is_dir():
            shutil.copytree(provenance / "tb", staging / "tb")

    return write_folder(folder, fill)


def store_in_float16(folder: str | Path) -> None:
    """Rewrite an agent folder's ``policy.pt`` with float16 tensors: half the bytes of a shipped export (the digit
    generator's LSTM of 512 is 24 MB in float32). ``load_agent`` casts them back into the float32 network, so the
    agent *is* the rounded weights: measure it after this, as ``scripts/ship_agent.sh --float16`` leaves it."""
    path = Path(folder) / "policy.pt"
    halved = {key: value.half() if value.is_floating_point() else value for key, value in load_weights(path).items()}
    if not all(torch.isfinite(value).all() for value in halved.values() if value.is_floating_point()):
        raise ValueError(f"{path} holds weights beyond float16's range: keep it in float32.")
    write_file(path, lambda staging: torch.save(halved, staging))


def set_temperature(folder: str | Path, temperature: float, first_stroke_temperature: float | None = None) -> None:
    """Rewrite an agent folder's ``agent.json`` so that its sampled paintings are drawn at ``temperature``, the first
    stroke at ``first_stroke_temperature`` (None: the same), unless a caller names others (``spiral paint``,
    ``spiral eval``, the app): for a generator shipped with the temperatures chosen on validation
    (``spiral eval --validation --temperature --first-stroke-temperature``; ``scripts/ship_agent.sh``)."""
    path = Path(folder) / "agent.json"
    manifest = AgentManifest.read(path)
    if manifest.class_mix is not None:
        raise ValueError(f"{folder} corrects its class mix as measured at its temperatures: set them on the generator "
                         f"it was made from, then make the correction again (spiral class-mix).")
    manifest = dataclasses.replace(manifest, temperature=temperature,
                                   first_stroke_temperature=first_stroke_temperature)  # checked in __post_init__
    write_file(path, lambda staging: staging.write_text(json.dumps(manifest.to_dict(), indent=2)))


def write_average(folder: str | Path, sources: Sequence[str | Path], weights: Sequence[float] | None = None) -> Path:
    """Write the agent whose policy weights are the weighted mean of the ``sources``' (``spiral average``).

    Why: a policy fine-tuned from another often paints better at a point between the two than at
    either end (WiSE-FT, Wortsman et al. 2022; "model soups"): the digit generator cloned further on
    a better agent's programs grew more confident and further from the real digits, and the halfway
    point beat the shipped clone on both. A mean of unrelated networks means nothing, so the sources
    must share actions, network and data; the brush may differ (a clone cloned further with another
    ``--brush``), since it changes what a stroke looks like, not the actions. The result takes the
    first one's ``agent.json`` (name, brush, temperatures, training counters) and discriminator, but not
    its class-mix correction (``spiral.class_mix``), measured on the samples of its own weights. ``weights``
    are relative (default equal), normalised to sum to 1; float16-stored weights are averaged in float32, tensors equal in every
    source are kept exactly.
    """
    if len(sources) < 2:
        raise ValueError(f"Averaging needs two agents or more, got {len(sources)}.")
    weights = [1.0] * len(sources) if weights is None else list(weights)
    if len(weights) != len(sources):
        raise ValueError(f"{len(weights)} weights for {len(sources)} agents: give one weight per agent.")
    if not all(weight > 0 and np.isfinite(weight) for weight in weights):
        raise ValueError(f"The weights must be > 0 and finite, got {weights}.")
    agents = [load_agent(source) for source in sources]
    first = agents[0].manifest
    for source, agent in zip(sources[1:], agents[1:]):
        env = dataclasses.replace(agent.manifest.env, brush=first.env.brush)  # the brush may differ
        differing = [name for name, value in (("env", env), ("network", agent.manifest.network),
                                              ("conditional", agent.manifest.conditional),
                                              ("data", agent.manifest.data)) if value != getattr(first, name)]
        if differing:
            raise ValueError(f"{source} differs from {sources[0]} in {', '.join(differing)}: only agents with the "
                             f"same actions, network and data average into one (one trained on from the other).")
    states = [agent.policy.state_dict() for agent in agents]
    shares = [weight / sum(weights) for weight in weights]
    averaged = {}
    for key, value in states[0].items():
        if all(torch.equal(value, state[key]) for state in states[1:]):
            averaged[key] = value
        elif value.is_floating_point():
            averaged[key] = sum(share * state[key] for share, state in zip(shares, states))
        else:
            raise ValueError(f"{key!r} is a {value.dtype} tensor that differs between the agents: it has no mean.")
    discriminator = load_weights(Path(sources[0]) / "discriminator.pt")
    return write_agent(folder, averaged, discriminator, dataclasses.replace(first, class_mix=None))


def load_agent(path: str | Path) -> Agent:
    """An agent from an exported folder, refusing anything else with a message that says why."""
    folder = Path(path)
    try:
        found = folder.is_dir()
    except OSError as error:  # a name the file system refuses (too long): no such folder either
        raise FileNotFoundError(f"No agent folder at {folder}: {error.strerror}.") from None
    if not found:
        raise FileNotFoundError(f"No agent folder at {folder}.")
    manifest_file = folder / "agent.json"
    if not manifest_file.is_file():
        raise ValueError(f"{folder} is not a spiral agent: it has no agent.json (export one with `spiral export`).")
    manifest = AgentManifest.read(manifest_file)
    try:
        policy = _policy(manifest)
    except (RuntimeError, ValueError, TypeError, OverflowError) as error:  # sizes torch cannot build, or too large
        raise ValueError(f"{manifest_file} does not describe a usable agent: {error}") from error
    try:
        policy.load_state_dict(load_weights(folder / "policy.pt"))
    except (RuntimeError, TypeError) as error:  # shapes, names or types that do not match agent.json
        raise ValueError(f"{folder / 'policy.pt'} does not fit the network agent.json describes: {error}") from error
    classifier = None
    if manifest.class_mix is not None:
        from spiral.class_mix import mix_classifier

        classifier = mix_classifier(len(manifest.class_mix.accept))
        try:
            classifier.load_state_dict(load_weights(folder / "mix_classifier.pt"))
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"{folder / 'mix_classifier.pt'} does not fit the class_mix agent.json describes: "
                             f"{error}") from error
    return Agent(policy, manifest, classifier)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A ``state_dict`` saved with ``torch.save``, read with ``weights_only=True``: plain tensors or a ValueError."""
    if not path.is_file():
        raise ValueError(f"{path.parent} has no {path.name}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for corrupt or unsafe files
        raise ValueError(f"{path} is not a plain tensor state_dict (corrupt or unsafe file): {error}") from error
    if not isinstance(state, dict) or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                              for key, value in state.items()):
        raise ValueError(f"{path} is not a state_dict of tensors.")
    for key, value in state.items():
        if value.is_complex() or value.layout != torch.strided:
            raise ValueError(f"{path} is not a state_dict of plain tensors: {key!r} is a {value.dtype} "
                             f"{value.layout} tensor.")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{path} is corrupt: {key!r} holds NaN or infinite values.")
    return state


def untrained_agent(paint_config: PaintConfig, conditional: bool, network: NetworkConfig = NetworkConfig(),
                    seed: int = 0, name: str = "untrained", **details: Any) -> Agent:
    """A randomly initialised agent: what the app shows before any agent is trained.

    ``details`` are further ``AgentManifest`` fields (``data`` ...), for an agent that stands for
    an experiment not trained yet.
    """
    manifest = AgentManifest(name, paint_config, network, conditional, **details)
    torch.manual_seed(seed)
    return Agent(_policy(manifest), manifest)


def _policy(manifest: AgentManifest) -> PolicyNetwork:
    """The policy network the manifest describes, with fresh weights; a ValueError if it would be too large."""
    shape = (manifest.action_names, manifest.action_nvec, manifest.env.grid_size, manifest.conditional,
             manifest.network)
    check_network_size(*shape)  # before any memory is asked for
    return PolicyNetwork(*shape)


def _random_seed() -> int:
    return int(np.random.SeedSequence().entropy % 2**63)


def _check_seed(seed: int | None) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= seed <= MAX_SEED):
        raise ValueError(f"The seed must be an integer from 0 to 2**63 - 1, got {seed!r}.")


def _array_image(array: np.ndarray) -> Image.Image:
    """A uint8 array as an image, or a ValueError saying what the array is instead."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ValueError(f"A target array must be uint8 pixels of shape (H, W), (H, W, 3) or (H, W, 4), got "
                         f"{array.dtype} of shape {array.shape}.")
    return Image.fromarray(array)
