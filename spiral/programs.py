"""Stroke programs of a dataset: how a reconstruction agent paints its images, as a JSONL file.

A generator that paints from scratch can learn from paintings in stroke space rather than from
pixels (issue #10, item 4: the unconditional generator from programs). ``generate_programs`` makes
that training data: a conditional agent paints the first ``count`` images of a dataset's split, and
each painting is kept as its ``envs.Program``, the record that replays to the pixels.

The file is JSON Lines. The first line is a header, stamped with ``PROGRAMS_FORMAT``::

    {"format": "spiral-programs", "version": 1,
     "agent": {"name": "mnist-l2", "policy_sha256": "...", "network": {...}, "training": {...}},
     "agent_folder": "agents/mnist-l2",
     "env": {...PaintConfig...},
     "data": {"dataset": "mnist", "color": false, "invert": false, "split": "train", "seed": 0},
     "paint": {"greedy": true, "seed": 0}}

(``paint`` also holds ``proposals`` and ``refine`` when the agent chose each stroke among its own
proposals, ``Agent.paint_all``'s: nearer paintings at several times the cost; a file without them
was painted with the agent's strokes alone), then one line per painted image, in painting order::

    {"index": 17, "mse": 0.0612, "program": {...Program.to_dict()...}}

``index`` is the image's place in the split (loaded as ``data`` says, at the agent's canvas size),
``mse`` the ``envs.mse`` of the agent's final canvas against that image. The guarantee, for every
line, with ``s = env.render_scale``: ``envs.painter.agent_view(program.render(scale=s), s)`` is bit
for bit the canvas the agent ended its episode on, and ``mse`` of it against the image equals
``mse`` exactly (JSON round-trips floats). At ``render_scale`` 1, as for every shipped agent, that
canvas is plainly ``program.render()``; ``ProgramsFile.canvas`` applies the rule either way.

Lines are appended as the images are painted, so an interrupted run leaves a valid file: a reader
ignores a last line cut short, and ``generate_programs`` picks up where it stopped, skipping the
indices already there, after checking that the header asks for the same agent (its weights, by
digest), environment, data and painting settings. ``agent_folder`` only records where the agent
was read from: moving the folder does not make a file foreign.

Image ``i`` is painted with the seed ``image_seed(paint.seed, i)``: a painting depends on its image
and the settings only, not on the order or on which run painted it (up to a near tie: images are
painted ``PAINT_BATCH`` at a time, and ``Agent.paint_all`` says why a batch could round one differently).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs import ActionCodec, InvalidActionError, PaintConfig, Program, mse
from envs.painter import agent_view
from envs.storage import FileFormat, indexed_records, read_json_lines, write_file
from spiral.agent import MAX_SEED, Agent, check_proposals, load_agent, paint_many
from spiral.demonstrations import Demonstration, Demonstrations
from spiral.experiment import DataSettings, Experiment, RewardSettings

PROGRAMS_FORMAT = FileFormat("spiral-programs", 1, "spiral programs file")
SPLITS = ("train", "test")
# load_dataset's shuffle of the splits: its default, the order `spiral eval` uses too, so "the first
# N test images" are the same images there and here.
DATA_SEED = 0
# What must agree for a file to be extended; ``agent_folder`` is provenance only.
MATCHED = ("agent", "env", "data", "paint")


@dataclass(frozen=True)
class PaintedProgram:
    """One line of the file: the image's index in the split, the painting's MSE, its program."""

    index: int
    mse: float
    program: Program

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "mse": self.mse, "program": self.program.to_dict()})


@dataclass
class ProgramsFile:
    """A programs file as read: its header (without ``format`` and ``version``) and its lines, by index."""

    path: Path
    header: dict[str, Any]
    records: list[PaintedProgram]

    @property
    def config(self) -> PaintConfig:
        return PaintConfig.from_dict(self.header["env"])

    @property
    def indices(self) -> list[int]:
        return [record.index for record in self.records]

    def canvas(self, record: PaintedProgram) -> np.ndarray:
        """The canvas the agent ended on, replayed from the program: rendered at the environment's
        ``render_scale`` and averaged down as the agent saw it (bit for bit, the module's guarantee)."""
        scale = self.config.render_scale
        return agent_view(record.program.render(scale=scale), scale)

    def images(self) -> np.ndarray:
        """The dataset images the records paint, in their order, (N, H, W, 3) uint8."""
        if not self.records:
            return np.zeros((0, *self.config.canvas_size, 3), np.uint8)
        images = split_images(self.header["data"], self.config, max(self.indices) + 1)
        return np.ascontiguousarray(images[self.indices])

    def labels(self) -> tuple[np.ndarray, int]:
        """The class labels of the images the records paint, in their order, and the dataset's number of classes;
        a ValueError for a dataset without labels (a folder of images)."""
        data = self.header["data"]
        loaded = _load_split_data(data, self.config, max(self.indices) + 1 if self.records else 0)
        labels = loaded.labels_train if data["split"] == "train" else loaded.labels_test
        if labels is None:
            raise ValueError(f"{self.path} paints {data['dataset']}, whose images have no class labels.")
        return np.asarray(labels[self.indices], np.int64), loaded.num_classes

    def generator_experiment(self) -> Experiment:
        """The unconditional experiment that learns to paint such programs from scratch: the painting
        agent's environment, network and data, no target (``reward.conditional = false``) and
        SPIRAL++'s temporal discriminator reward for the RL stage that follows the cloning."""
        agent, data = self.header["agent"], self.header["data"]
        try:
            return Experiment(name=f"{agent['name']}-gen", env=self.header["env"], network=agent["network"],
                              data=DataSettings(data["dataset"], data["color"], data["invert"]),
                              reward=RewardSettings(mode="temporal", conditional=False))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{self.path}: the header's agent and data make no experiment here: {error}") from None

    def demonstrations(self) -> Demonstrations:
        """The programs as demonstrations that ``spiral pretrain`` clones into a generator: each stroke
        turned back into its action (``ActionCodec.encode``), the experiment ``generator_experiment``.

        Only a training split qualifies (the test split measures). The header's ``search`` (what
        made the demonstrations) is the painting agent and its settings.
        """
        if self.header["data"]["split"] != "train":
            raise ValueError(f"{self.path} paints the {self.header['data']['split']} split; a generator learns from "
                             "training images only (make the file with --split train).")
        codec, demos = ActionCodec(self.config), []
        for record in self.records:
            try:
                actions = np.stack([codec.encode(stroke) for stroke in record.program.strokes])
            except InvalidActionError as error:
                raise ValueError(f"{self.path}: the program of image {record.index} is not one of its env's "
                                 f"action space: {error}") from None
            demos.append(Demonstration(record.index, actions, record.mse))
        experiment = self.generator_experiment()
        header = {"preset": experiment.name, "env": self.header["env"], "data": self.header["data"],
                  "search": {"agent": self.header["agent"], "paint": self.header["paint"]},
                  "experiment": experiment.to_dict()}
        return Demonstrations(self.path, header, demos)


def image_seed(seed: int, index: int) -> int:
    """The seed ``Agent.paint`` gets for image ``index``: a function of the two only, within torch's range."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]) % (MAX_SEED + 1)


def weights_digest(agent: Agent) -> str:
    """SHA-256 of the policy's tensors (names, dtypes, shapes and values): which weights painted.

    Taken from the loaded ``state_dict`` rather than the file's bytes, so a re-export of the same
    weights (whose pickle framing may differ) has the same digest.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(agent.policy.state_dict().items()):
        array = tensor.detach().cpu().numpy()  # the module's own dtypes (float32, int64): numpy has them all
        digest.update(f"{name}:{array.dtype}:{array.shape};".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def programs_header(agent: Agent, agent_folder: str | Path, dataset: str, split: str, greedy: bool,
                    seed: int, proposals: int = 1, refine: int = 0) -> dict[str, Any]:
    """The header line of a programs file (stamped): the agent's summary and every setting that shapes a line.
    ``proposals`` and ``refine`` are written only when they change the paintings, so files of the agent's
    strokes alone keep the header they always had."""
    manifest = agent.manifest
    paint = {"greedy": greedy, "seed": seed} | ({"proposals": proposals, "refine": refine}
                                                if (proposals, refine) != (1, 0) else {})
    return PROGRAMS_FORMAT.stamp({
        "agent": {"name": manifest.name, "policy_sha256": weights_digest(agent), "network": manifest.network.to_dict(),
                  "training": None if manifest.training is None else asdict(manifest.training)},
        "agent_folder": str(agent_folder),
        "env": manifest.env.to_dict(),
        "data": {"dataset": dataset, "color": manifest.data.color, "invert": manifest.data.invert, "split": split,
                 "seed": DATA_SEED},
        "paint": paint,
    })


def split_images(data: dict[str, Any], config: PaintConfig, count: int | None) -> np.ndarray:
    """The first ``count`` images of the header's split (all of them for None), as ``data`` loads them."""
    loaded = _load_split_data(data, config, count)
    images = loaded.train if data["split"] == "train" else loaded.test
    if count is not None and len(images) < count:
        raise ValueError(f"{data['dataset']} has {len(images)} {data['split']} images; {count} were asked for.")
    if len(images) == 0:
        raise ValueError(f"The {data['split']} split of {data['dataset']} is empty: there is nothing to paint.")
    return images


def _load_split_data(data: dict[str, Any], config: PaintConfig, count: int | None):
    """The dataset a header's ``data`` names, at the environment's canvas size, its first ``count`` images a split."""
    from spiral.datasets import load_dataset

    return load_dataset(data["dataset"], config.canvas_size, color=data["color"], invert=data["invert"],
                        limit=count, seed=data["seed"])


# --- reading ----------------------------------------------------------------------------------------------

def read_programs(path: str | Path) -> ProgramsFile:
    """Read and check a programs file; a ValueError names the line that is wrong.

    Every program must be one the header's environment makes (canvas size, brush, background,
    points per stroke, ``episode_length`` strokes), and no index may appear twice. A last line
    without its newline that does not parse (a write cut short) is ignored. Programs are not
    replayed here (milliseconds each): ``ProgramsFile.canvas`` does that on demand.
    """
    path = Path(path)
    header, lines = read_json_lines(path, PROGRAMS_FORMAT)
    config = _check_header(header, path)
    return ProgramsFile(path, header, indexed_records(path, lines, lambda record, where: _record(record, config, where)))


def _check_header(header: dict[str, Any], path: Path) -> PaintConfig:
    """The header's environment, once its settings are checked to be what ``programs_header`` writes."""
    for key in MATCHED:
        if not isinstance(header.get(key), dict):
            raise ValueError(f"{path}: the header lacks {key!r} (or it is malformed).")
    data, paint = header["data"], header["paint"]
    if data.get("split") not in SPLITS or not isinstance(data.get("dataset"), str):
        raise ValueError(f"{path}: the header's data must name a dataset and a split ({' or '.join(SPLITS)}), "
                         f"got {json.dumps(data)[:200]}.")
    if (not isinstance(paint.get("greedy"), bool) or not _is_int(paint.get("seed"), 0)
            or not _is_int(paint.get("proposals", 1), 1) or not _is_int(paint.get("refine", 0), 0)):
        raise ValueError(f"{path}: the header's paint must be greedy (true or false) and a seed >= 0, with "
                         f"proposals >= 1 and refine >= 0 where given, got {json.dumps(paint)[:200]}.")
    try:
        return PaintConfig.from_dict(header["env"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: the header's env is not a valid PaintConfig: {error}") from None


def _record(record: Any, config: PaintConfig, where: str) -> PaintedProgram:
    if not isinstance(record, dict) or set(record) != {"index", "mse", "program"}:
        raise ValueError(f"{where} must be an object with index, mse and program, got {json.dumps(record)[:200]}.")
    index, error = record["index"], record["mse"]
    if not _is_int(index, 0):
        raise ValueError(f"{where}: index must be an integer >= 0, got {index!r}.")
    if isinstance(error, bool) or not isinstance(error, (int, float)) or not math.isfinite(error) or error < 0:
        raise ValueError(f"{where}: mse must be a finite number >= 0, got {error!r}.")
    try:
        program = Program.from_dict(record["program"], "the program")
    except ValueError as problem:
        raise ValueError(f"{where}: {problem}") from None
    made = (program.width, program.height, program.brush, program.background, program.points_per_stroke)
    expected = (config.width, config.height, config.brush, tuple(config.background), config.points_per_stroke)
    if made != expected or len(program.strokes) != config.episode_length:
        raise ValueError(f"{where}: the program (size, brush, background, points per stroke, "
                         f"{len(program.strokes)} strokes) is not one the header's env paints "
                         f"({config.episode_length} strokes).")
    return PaintedProgram(index, float(error), program)


def _is_int(value: Any, low: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= low


# --- making them ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    """What a ``generate_programs`` call did: the file's totals and this call's cost."""

    path: Path
    total: int  # programs in the file
    new: int  # painted by this call
    count: int  # the first ``count`` images of the split, all painted now
    mean_mse: float  # the agent's, over those images
    blank_mse: float  # the blank canvas's, over the same images
    seconds: float  # wall-clock time of this call's painting

    def line(self) -> str:
        return (f"{self.total} programs in {self.path} ({self.new} new): mean MSE {self.mean_mse:.4f} over the first "
                f"{self.count} images (blank canvas {self.blank_mse:.4f}); painted in {self.seconds:.1f} s")


def generate_programs(agent_folder: str | Path, dataset: str, out: str | Path, count: int | None = None,
                      split: str = "train", greedy: bool = True, seed: int = 0, workers: int = 1,
                      progress: bool = True, proposals: int = 1, refine: int = 0) -> Summary:
    """Paint the first ``count`` images (None: all) of ``dataset``'s ``split`` with the agent in
    ``agent_folder``, appending one program a line to the JSONL file ``out``.

    The agent must reconstruct targets; it sees the images at its canvas size, in its colour mode
    and polarity (its manifest's ``data``). ``greedy`` takes the likeliest action at every step,
    otherwise actions are sampled with ``image_seed(seed, index)``. With ``proposals`` > 1 each stroke is the
    best of that many the agent proposes, hill-climbed ``refine`` rounds (``Agent.paint_all``): nearer the images,
    though a generator cloned from them was less confident (docs/RESULTS.md, ``mnist-pen-gen``). Indices already
    in ``out`` are skipped (a rerun resumes); a file whose header asks for other settings is refused. Everything
    that can be refused (agent, dataset, count, split) is, before ``out`` is touched. Images are painted
    ``PAINT_BATCH`` at a time on one torch thread; ``workers`` > 1 paints batches in that many processes,
    and the lines are the same, in the order the batches finish.
    """
    from tqdm import tqdm

    if count is not None and not _is_int(count, 1):
        raise ValueError(f"count must be a positive integer, got {count!r}.")
    if split not in SPLITS:
        raise ValueError(f"split must be {' or '.join(SPLITS)}, got {split!r}.")
    if not _is_int(seed, 0) or seed > MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}.")
    if not _is_int(workers, 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}.")
    agent = load_agent(agent_folder)
    if not agent.conditional:
        raise ValueError(f"{agent_folder} paints from scratch (an unconditional agent): programs of a dataset are "
                         f"painted by an agent that reconstructs targets, such as agents/mnist-l2.")
    check_proposals(proposals, agent.conditional, refine)
    header = programs_header(agent, agent_folder, dataset, split, greedy, seed, proposals, refine)
    targets = split_images(header["data"], agent.paint_config, count)
    count = len(targets)
    out = Path(out)
    done = _prepare(out, header)
    todo = [index for index in range(count) if index not in done]
    start, total_mse = time.perf_counter(), sum(done.values())  # a running sum: the bar's mean costs O(1) a line
    bar = tqdm(total=count, initial=count - len(todo), desc="programs", unit="img", disable=not progress)
    with open(out, "a", encoding="utf-8") as file, bar:
        for record in _paint_all(agent, targets, todo, (greedy, proposals, refine), seed, workers):
            file.write(record.to_json() + "\n")
            file.flush()
            done[record.index] = record.mse
            total_mse += record.mse
            bar.update()
            bar.set_postfix(mse=f"{total_mse / len(done):.4f}")
    elapsed = time.perf_counter() - start
    blank = np.full_like(targets[0], agent.paint_config.background)
    blank_mse = np.mean([float(mse(blank, target)) for target in targets])  # one by one: mse works in float64
    return Summary(out, len(done), len(todo), count, float(np.mean([done[index] for index in range(count)])),
                   float(blank_mse), elapsed)


def _paint_all(agent: Agent, targets: np.ndarray, todo: list[int], settings: tuple[bool, int, int], seed: int,
               workers: int) -> Iterator[PaintedProgram]:
    """The paintings of the images ``todo``, a batch at a time as they finish (``spiral.agent.paint_many``);
    ``settings`` are ``(greedy, proposals, refine)``."""
    greedy, proposals, refine = settings
    for positions, episodes, _ in paint_many(agent, targets[todo], [image_seed(seed, todo[i]) for i in range(len(todo))],
                                             greedy, proposals=proposals, workers=workers, refine=refine):
        for position, episode in zip(positions, episodes):
            index = todo[position]
            yield PaintedProgram(index, float(mse(episode.canvas, targets[index])), episode.program)


def _prepare(out: Path, header: dict[str, Any]) -> dict[int, float]:
    """Start ``out`` with ``header``, or check its header and trim a cut-short last line; the done indices' MSE."""
    if not out.exists() or out.stat().st_size == 0:
        write_file(out, lambda path: path.write_text(json.dumps(header) + "\n"))
        return {}
    existing = read_programs(out)
    body = PROGRAMS_FORMAT.check(header, "the asked settings")
    different = [key for key in MATCHED if existing.header.get(key) != body[key]]
    if different:
        details = "; ".join(f"{key}: the file has {json.dumps(existing.header.get(key))}, asked "
                            f"{json.dumps(body[key])}" for key in different)
        raise ValueError(f"{out} holds programs made with other settings ({details}). Write to another file, or "
                         f"delete this one to start over.")
    if not out.read_text().endswith("\n"):  # a last line cut short (ignored) or without its newline
        lines = [json.dumps(PROGRAMS_FORMAT.stamp(existing.header))] + [record.to_json() for record in existing.records]
        write_file(out, lambda path: path.write_text("".join(line + "\n" for line in lines)))
    return {record.index: record.mse for record in existing.records}
