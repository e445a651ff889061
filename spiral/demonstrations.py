"""Search demonstrations: how a greedy stroke search paints training images, as a JSONL file.

The first stage of the learning pipeline (docs: DESIGN.md): ``spiral.search.greedy_search``
paints each of the first ``count`` training images of an experiment's dataset in the
experiment's action space, and ``spiral.pretrain`` clones what it did into the policy.

The file is JSON Lines. The first line is a header, stamped with ``DEMO_FORMAT``::

    {"format": "spiral-demonstrations", "version": 1,
     "preset": "mnist-pen",
     "env": {...PaintConfig...},
     "data": {"dataset": "mnist", "color": false, "invert": false, "split": "train", "seed": 0},
     "search": {"bank": 30, "jumps": 7, "jump_factor": 2.0, "guided": 1.0, "refine": 4, "seed": 0},
     "experiment": {...the whole experiment: the network pretraining builds...}}

then one line per painted image, in the order they finished::

    {"index": 17, "actions": [[1, 530, 498, 2], ...], "mse": 0.0412}

``index`` is the image's place in the training split (loaded as ``data`` says), ``actions`` one
action per step, and ``mse`` what replaying them through ``PaintEnv`` on that image gives, exactly.

**An agent as the teacher** (expert iteration, ``--teacher AGENT --proposals K [--refine R]``):
instead of the search, an agent paints each image greedy, each stroke the best of ``K`` it proposes
and checks, then hill-climbed ``R`` rounds as the search refines its candidates (``Agent.paint_all``). Cloned back into the agent, its paintings teach it the strokes its own search
found, in states like its own; the next round's agent proposes for the round after. The header's
``search`` is then ``"teacher": {"agent": PATH, "policy_sha256": ..., "proposals": K, "seed": 0}``
(and ``"refine": R`` where ``R`` > 0), and image ``i`` is painted with the seed ``spiral.programs.image_seed(seed, i)``.

**Corrections** (DAgger, ``--student AGENT``): a policy cloned from demonstrations drifts into
canvases the search never showed it, and does not know how to recover there. A corrections file
records the student's own greedy episodes, ``actions``, with what the search would have done in
each of their states, ``labels`` (``spiral.search.label_episode``); ``mse`` is the student's.
Its header adds ``"student": {"agent": PATH, "policy_sha256": ...}`` (and ``"tolerance"`` where
the labels keep the student's strokes that are nearly as good as the search's, ``--tolerance``).
Pretraining replays the student's actions and imitates the labels.
Lines are appended as the images finish, so an interrupted run leaves a valid file: a reader
ignores a last line cut short, and ``generate_demonstrations`` picks up where it stopped, skipping
the indices already there (after checking that the header asks for the same settings).

The search of image ``i`` draws from ``np.random.default_rng([search.seed, i])``: a demonstration
depends on its image and the settings only, not on the worker that painted it or the order.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from envs import ActionCodec, InvalidActionError, PaintConfig, mse
from envs.storage import FileFormat, indexed_records, read_json_lines, write_file
from spiral.search import SearchSettings, greedy_search, label_episode

if TYPE_CHECKING:  # spiral.experiment imports torch: a search worker does without
    from spiral.experiment import Experiment

DEMO_FORMAT = FileFormat("spiral-demonstrations", 1, "spiral demonstrations file")
SPLIT = "train"  # demonstrations are made on training images only: the test split measures


@dataclass(frozen=True)
class Demonstration:
    """How the search painted one training image: its index, one action per step, the final MSE."""

    index: int
    actions: np.ndarray  # (episode_length, components) int64: what was painted
    mse: float
    labels: np.ndarray | None = None  # in a corrections file: what the search would have done instead

    def to_json(self) -> str:
        record = {"index": self.index, "actions": self.actions.tolist(), "mse": self.mse}
        if self.labels is not None:
            record["labels"] = self.labels.tolist()
        return json.dumps(record)

    @property
    def imitated(self) -> np.ndarray:
        """The actions a policy learns to take in this episode's states."""
        return self.actions if self.labels is None else self.labels


@dataclass
class Demonstrations:
    """A demonstrations file as read: its header and its demonstrations, sorted by index."""

    path: Path
    header: dict[str, Any]  # the header without ``format`` and ``version``
    demos: list[Demonstration]

    @property
    def config(self) -> PaintConfig:
        return PaintConfig.from_dict(self.header["env"])

    @property
    def student(self) -> dict[str, Any] | None:
        """The agent whose episodes a corrections file labels; None for demonstrations."""
        return self.header.get("student")

    @property
    def indices(self) -> list[int]:
        return [demo.index for demo in self.demos]

    def experiment(self) -> Experiment:
        """The experiment the demonstrations were made for: its network is the one to pretrain."""
        from spiral.experiment import Experiment

        try:
            return Experiment.from_dict(self.header["experiment"])
        except ValueError as error:
            raise ValueError(f"{self.path}: the header's experiment is not valid here: {error}") from None

    def targets(self) -> np.ndarray:
        """The training images the demonstrations paint, in their order, (N, H, W, 3) uint8."""
        if not self.demos:
            return np.zeros((0, *self.config.canvas_size, 3), np.uint8)
        images = training_images(self.header["data"], self.config, max(self.indices) + 1)
        return np.ascontiguousarray(images[self.indices])


@dataclass(frozen=True)
class AgentTeacher:
    """An agent that paints the demonstrations instead of the search: greedy, each stroke the best of ``proposals``
    it proposes, hill-climbed ``refine`` rounds (expert iteration; the module's docstring)."""

    agent: str | Path  # the agent's folder
    proposals: int = 8
    seed: int = 0  # the proposals' random streams: image i's is ``image_seed(seed, i)``
    refine: int = 0  # hill-climbing rounds on each chosen stroke (``spiral.search.hill_climb``)

    def __post_init__(self) -> None:
        for name, low in (("proposals", 1), ("seed", 0), ("refine", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"The teacher's {name} must be an integer >= {low}, got {value!r}.")


def demo_header(experiment: Experiment, search: SearchSettings | dict[str, Any],
                student: dict[str, Any] | None = None) -> dict[str, Any]:
    """The header line of a demonstrations file for ``experiment`` and ``search`` (stamped), where ``search`` is
    the search's settings or an agent teacher's record (``_teacher``); with ``student``, of a corrections file."""
    data = experiment.data
    made_by = {"teacher": search} if isinstance(search, dict) else {"search": asdict(search)}
    return DEMO_FORMAT.stamp(({"student": student} if student else {}) | {
        "preset": experiment.name,
        "env": experiment.paint_config().to_dict(),
        "data": {"dataset": data.dataset, "color": data.color, "invert": data.invert, "split": SPLIT,
                 "seed": experiment.training.seed},
        **made_by,
        "experiment": experiment.to_dict(),
    })


# What must agree for a file to be extended: the rest of the experiment (learning rates ...) may change.
MATCHED = ("preset", "env", "data", "search", "teacher", "student")
# Who painted the demonstrations: a header names one of them.
PAINTERS = ("search", "teacher")


def training_images(data: dict[str, Any], config: PaintConfig, count: int) -> np.ndarray:
    """The first ``count`` training images as the header's ``data`` loads them (a prefix of the split)."""
    from spiral.datasets import load_dataset

    images = load_dataset(data["dataset"], config.canvas_size, color=data["color"], invert=data["invert"],
                          limit=count, seed=data["seed"]).train
    if len(images) < count:
        raise ValueError(f"{data['dataset']} has {len(images)} training images; {count} were asked for.")
    return images


def read_demonstrations(path: str | Path) -> Demonstrations:
    """Read and check a demonstrations file; a ValueError names the line that is wrong.

    Every action is checked against the header's action space, every episode has the header's
    length, and no index appears twice. A last line without its newline that does not parse (a
    write cut short) is ignored.
    """
    path = Path(path)
    header, lines = read_json_lines(path, DEMO_FORMAT)
    config = _config(header, path)
    codec, labelled = ActionCodec(config), header.get("student") is not None
    demos = indexed_records(path, lines, lambda record, where: _demonstration(record, codec, config.episode_length,
                                                                              where, labelled))
    return Demonstrations(path, header, demos)


def _config(header: dict[str, Any], path: Path) -> PaintConfig:
    painters = [key for key in PAINTERS if key in header]
    if len(painters) != 1:
        raise ValueError(f"{path}: the header must name what painted the demonstrations, one of "
                         f"{' or '.join(map(repr, PAINTERS))}, got {painters or 'neither'}.")
    for key in MATCHED + ("experiment",):
        if (key == "student" or key in PAINTERS) and header.get(key) is None:
            continue  # a demonstrations file; the painter it does not name
        if not isinstance(header.get(key), str if key == "preset" else dict):
            raise ValueError(f"{path}: the header lacks {key!r} (or it is malformed).")
    try:
        return PaintConfig.from_dict(header["env"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: the header's env is not a valid PaintConfig: {error}") from None


def _demonstration(record: Any, codec: ActionCodec, length: int, where: str, labelled: bool) -> Demonstration:
    keys = {"index", "actions", "mse"} | ({"labels"} if labelled else set())
    if not isinstance(record, dict) or set(record) != keys:
        raise ValueError(f"{where} must be an object with {', '.join(sorted(keys))}, got {json.dumps(record)[:200]}.")
    index, error = record["index"], record["mse"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"{where}: index must be an integer >= 0, got {index!r}.")
    if isinstance(error, bool) or not isinstance(error, (int, float)) or not math.isfinite(error):
        raise ValueError(f"{where}: mse must be a finite number, got {error!r}.")
    actions, labels = (_actions(record[key], key, codec, length, where) if key in record else None
                       for key in ("actions", "labels"))
    return Demonstration(index, actions, float(error), labels)


def _actions(actions: Any, key: str, codec: ActionCodec, length: int, where: str) -> np.ndarray:
    if not isinstance(actions, list) or len(actions) != length:
        raise ValueError(f"{where}: {key} must be a list of {length} actions (episode_length), got "
                         f"{len(actions) if isinstance(actions, list) else type(actions).__name__}.")
    for step, action in enumerate(actions):
        if not isinstance(action, list) or not all(type(value) is int for value in action):
            raise ValueError(f"{where}: {key}[{step}] must be a list of integers, got {json.dumps(action)[:200]}.")
    try:
        checked = [codec.validate(action) for action in actions]
    except InvalidActionError as error:
        raise ValueError(f"{where}: {key}: {error}") from None
    return np.stack(checked).astype(np.int64)


# --- making them ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    """What a ``generate_demonstrations`` call did: the file's totals and this call's cost."""

    path: Path
    total: int  # demonstrations in the file
    new: int  # painted by this call
    mean_mse: float  # over the file's demonstrations
    blank_mse: float  # the blank canvas on the same images
    seconds: float  # wall-clock time of this call's painting
    cpu_seconds: float  # search time summed over the workers
    corrections: bool = False  # a corrections file: the MSE is the student's

    def line(self) -> str:
        per = f"{self.seconds / self.new:.3f} s per image ({self.cpu_seconds / self.new:.3f} CPU-s)" if self.new else \
            "nothing new to paint"
        kind, whose = ("corrections", "the student's mean MSE") if self.corrections else ("demonstrations", "mean MSE")
        return (f"{self.total} {kind} in {self.path} ({self.new} new): {whose} {self.mean_mse:.4f} "
                f"(blank canvas {self.blank_mse:.4f}); {per}")


def generate_demonstrations(experiment: Experiment, count: int, search: SearchSettings | AgentTeacher,
                            out: str | Path, workers: int = 1, progress: bool = True, student: str | Path | None = None,
                            tolerance: float = 0.0) -> Summary:
    """Paint the first ``count`` training images with the search, appending to the JSONL file ``out``.

    Indices already in ``out`` are skipped (a rerun resumes); a file whose header asks for other
    settings is refused. ``workers`` > 1 paints in that many processes, each with its own renderer.
    With ``student`` (an agent folder), write corrections instead: the student paints each image,
    greedy, and the search labels every state of its episode; ``mse`` is then the student's.
    ``tolerance`` > 0 keeps the student's own stroke as the label where it gains at least ``1 -
    tolerance`` of the search's (``spiral.search.label_episode``); the header's ``student`` records it.
    With an ``AgentTeacher`` as ``search``, that agent paints the demonstrations (no student then).
    """
    from tqdm import tqdm

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}.")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}.")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be a fraction in [0, 1), got {tolerance!r}.")
    if tolerance and student is None:
        raise ValueError("tolerance keeps a student's own strokes as labels: it needs a student (--student).")
    if isinstance(search, AgentTeacher) and student is not None:
        raise ValueError("A teacher agent paints its own episodes; corrections label a student's with the search: "
                         "give a teacher or a student, not both.")
    limit = experiment.data.limit
    if limit is not None and count > limit:
        raise ValueError(f"The experiment limits its data to {limit} images per split (data.limit); "
                         f"asked for {count}.")
    out = Path(out)
    config = experiment.paint_config()
    agent, student_record = _student(student, config, tolerance) if student is not None else (None, None)
    teacher, made_by = _teacher(search, config) if isinstance(search, AgentTeacher) else (None, search)
    header = demo_header(experiment, made_by, student_record)
    done = _prepare(out, header)
    targets = training_images(header["data"], config, count)
    todo = [index for index in range(count) if index not in done]
    start, cpu = time.perf_counter(), 0.0
    bar = tqdm(total=count, initial=count - len(todo), desc="demonstrations", unit="img", disable=not progress)
    paintings = (_taught(teacher, search, targets, todo, workers) if teacher is not None else
                 _paint_all(config, search, targets, todo, workers, agent, tolerance))
    with open(out, "a", encoding="utf-8") as file, bar, _student_threads(agent):
        for demo, seconds in paintings:
            file.write(demo.to_json() + "\n")
            file.flush()
            done[demo.index] = demo.mse
            cpu += seconds
            bar.update()
            bar.set_postfix(mse=f"{np.mean(list(done.values())):.4f}")
    elapsed = time.perf_counter() - start
    painted = [index for index in range(count) if index in done]
    blank = np.full_like(targets[0], config.background)
    blank_mse = float(np.mean([float(mse(blank, targets[index])) for index in painted])) if painted else math.nan
    mean_mse = float(np.mean([done[index] for index in sorted(done)])) if done else math.nan  # in index order: the
    # same sum whatever order the workers finished in
    return Summary(out, len(done), len(todo), mean_mse, blank_mse, elapsed, cpu, corrections=agent is not None)


def _prepare(out: Path, header: dict[str, Any]) -> dict[int, float]:
    """Start ``out`` with ``header``, or check its header and trim a cut-short last line; the done indices."""
    if not out.exists() or out.stat().st_size == 0:
        write_file(out, lambda path: path.write_text(json.dumps(header) + "\n"))
        return {}
    existing = read_demonstrations(out)
    body = DEMO_FORMAT.check(header, "the asked settings")
    different = [key for key in MATCHED if existing.header.get(key) != body.get(key)]
    if different:
        details = "; ".join(f"{key}: the file has {json.dumps(existing.header.get(key))}, asked "
                            f"{json.dumps(body.get(key))}" for key in different)
        raise ValueError(f"{out} holds demonstrations made with other settings ({details}). Write to another "
                         f"file, or delete this one to start over.")
    text = out.read_text()
    if not text.endswith("\n"):  # a last line cut short (ignored) or without its newline: rewrite whole lines
        lines = [DEMO_FORMAT.stamp(existing.header)] + [json.loads(demo.to_json()) for demo in existing.demos]
        write_file(out, lambda path: path.write_text("".join(json.dumps(line) + "\n" for line in lines)))
    return {demo.index: demo.mse for demo in existing.demos}


def _student(folder: str | Path, config: PaintConfig, tolerance: float = 0.0) -> tuple[Any, dict[str, Any]]:
    """The student agent in ``folder`` and how a corrections header names it (with the labels' ``tolerance`` where
    there is one); refused if it paints otherwise."""
    agent, record = _reconstruction_agent(folder, config, "student", "its episodes could not be labelled")
    return agent, record | ({"tolerance": float(tolerance)} if tolerance else {})


def _teacher(teacher: AgentTeacher, config: PaintConfig) -> tuple[Any, dict[str, Any]]:
    """The teacher agent and how the header names it, with its proposals, seed and refining (named only where it
    refines, as files written before it could name no refining); refused if it paints otherwise."""
    from spiral.agent import check_proposals

    agent, record = _reconstruction_agent(teacher.agent, config, "teacher", "its paintings are not demonstrations "
                                          "of the preset's action space")
    check_proposals(teacher.proposals, agent.conditional, teacher.refine)
    return agent, record | {"proposals": teacher.proposals, "seed": teacher.seed} | (
        {"refine": teacher.refine} if teacher.refine else {})


def _reconstruction_agent(folder: str | Path, config: PaintConfig, role: str, why: str) -> tuple[Any, dict[str, Any]]:
    """The agent in ``folder`` and its record in a header (where it was, the digest of its weights' file); refused
    unless it reconstructs targets in the environment ``config``."""
    import hashlib

    from spiral.agent import load_agent

    agent = load_agent(folder)
    if not agent.conditional:
        raise ValueError(f"The {role} {folder} paints from scratch; a {role} must be a reconstruction agent.")
    if agent.paint_config != config:
        raise ValueError(f"The {role} {folder} paints with other environment settings than the preset's: {why}.")
    digest = hashlib.sha256((Path(folder) / "policy.pt").read_bytes()).hexdigest()
    return agent, {"agent": str(Path(folder).resolve()), "policy_sha256": digest}


def _taught(agent: Any, teacher: AgentTeacher, targets: np.ndarray, todo: list[int], workers: int
            ) -> Iterator[tuple[Demonstration, float]]:
    """The teacher's paintings of ``todo`` as demonstrations, as they finish, with the seconds each took (its
    batch's share): greedy, each stroke the best of its proposals, refined (``spiral.agent.paint_many``)."""
    from spiral.agent import paint_many
    from spiral.programs import image_seed

    seeds = [image_seed(teacher.seed, index) for index in todo]
    for positions, episodes, seconds in paint_many(agent, targets[todo], seeds, greedy=True,
                                                   proposals=teacher.proposals, workers=workers,
                                                   refine=teacher.refine):
        for position, episode in zip(positions, episodes):
            yield Demonstration(todo[position], np.asarray(episode.actions, np.int64), episode.l2), \
                seconds / len(positions)


def _student_threads(student: Any) -> contextlib.AbstractContextManager:
    """One torch thread while a student paints beside the search workers (``spiral.agent.one_torch_thread``)."""
    if student is None:
        return contextlib.nullcontext()
    from spiral.agent import one_torch_thread

    return one_torch_thread()


def _paint_all(config: PaintConfig, search: SearchSettings, targets: np.ndarray, todo: list[int],
               workers: int, student: Any = None, tolerance: float = 0.0) -> Iterator[tuple[Demonstration, float]]:
    """The demonstrations of ``todo``, as they finish, with the seconds each took.

    A ``student`` paints in this process (torch stays out of the workers), as the workers ask for jobs.
    """
    def job(index: int) -> tuple[int, np.ndarray, np.ndarray | None]:
        target = np.ascontiguousarray(targets[index])
        if student is None:
            return index, target, None
        return index, target, np.asarray(student.paint(target, seed=index, greedy=True).actions, np.int64)

    jobs = map(job, todo)
    if workers == 1 or len(todo) <= 1:
        _start_worker(config.to_dict(), asdict(search), tolerance)
        yield from map(_paint_one, jobs)
        return
    # Fork where there is one: no interpreter to start, and no resource-tracker process left running after the
    # pool (spawn's). The workers never touch torch (spiral.search is numpy and libmypaint), so a parent whose
    # torch has started threads is no hazard to them.
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with context.Pool(min(workers, len(todo)), _start_worker, (config.to_dict(), asdict(search), tolerance)) as pool:
        yield from pool.imap_unordered(_paint_one, jobs)


_worker: dict[str, Any] = {}


def _start_worker(config: dict[str, Any], search: dict[str, Any], tolerance: float) -> None:
    _worker["config"], _worker["search"] = PaintConfig.from_dict(config), SearchSettings(**search)
    _worker["tolerance"] = tolerance


def _paint_one(job: tuple[int, np.ndarray, np.ndarray | None]) -> tuple[Demonstration, float]:
    """A demonstration of the search, or with a student's ``actions``, its corrections."""
    index, target, actions = job
    config, search = _worker["config"], _worker["search"]
    start = time.perf_counter()
    rng = np.random.default_rng([search.seed, index])
    if actions is None:
        result = greedy_search(config, target, rng=rng, **search.keywords())
        demo = Demonstration(index, np.asarray(result.actions, np.int64), result.mse)
    else:
        labels, error = label_episode(config, target, actions, rng, tolerance=_worker["tolerance"],
                                      **search.keywords())
        demo = Demonstration(index, actions, error, labels)
    return demo, time.perf_counter() - start
