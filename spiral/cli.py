"""The ``spiral`` command: ``spiral paint-random``, ``spiral train``, ``spiral eval``, ``spiral classifier``, ..."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path


from envs import PaintEnv, Program, available_brushes
from envs.media import write_painting


def paint_random(args: argparse.Namespace) -> None:
    """Paint one episode with a uniformly random policy and write it out."""
    env = PaintEnv(canvas_size=args.canvas_size, grid_size=args.grid, episode_length=args.steps, brush=args.brush)
    env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    terminated = False
    while not terminated:
        _, _, terminated, _, _ = env.step(env.action_space.sample())
    _report(write_painting(env.program, args.out, scale=args.scale))


def replay(args: argparse.Namespace) -> None:
    """Re-render a saved program at another resolution, optionally with another brush."""
    program = Program.load(args.program)
    if args.brush:
        program.brush = args.brush
    _report(write_painting(program, args.out, name=args.name or Path(args.program).stem, scale=args.scale))


def train(args: argparse.Namespace) -> None:
    """Train (or resume) a run; Ray and RLlib are imported only here, after the settings are checked."""
    from spiral.experiment import Experiment

    if args.resume and (args.pbt or args.name or args.overrides or args.preset):
        given = [flag for flag, value in (("--pbt", args.pbt), ("--name", args.name), ("--preset", args.preset),
                                          ("overrides", args.overrides)) if value]
        raise ValueError(f"--resume continues {args.resume} as it was started, so {', '.join(given)} cannot "
                         "change it; only --iterations and --address go with --resume.")
    if args.pbt and args.name:
        raise ValueError("--pbt names its population's folder <preset>-pbt itself; leave out --name.")
    if args.resume:  # before Ray is even imported: the run's settings, and its lock (one process per run)
        from spiral.runs import run_experiment

        experiment = run_experiment(Path(args.resume))
    else:  # fail fast: before Ray and RLlib are even imported
        experiment = Experiment.from_preset(args.preset or "mnist-recon", args.overrides)
    from spiral.rllib.trainer import Trainer, connect

    connect(args.address)
    if args.pbt:
        from spiral.rllib.pbt import run_pbt

        results = run_pbt(experiment, Path(args.runs_dir), args.pbt, args.iterations or experiment.training.iterations)
        print(f"best trial: {results.get_best_result().path}")
        return
    trainer = (Trainer(Path(args.resume), experiment) if args.resume
               else Trainer.start(experiment, Path(args.runs_dir), name=args.name))
    run_dir = _shown(trainer.run_dir)
    print(f"run folder: {run_dir}   (tensorboard --logdir {run_dir / 'tb'})")
    try:
        trainer.run(args.iterations)
    except KeyboardInterrupt:
        print(f"stopped; resume with: spiral train --resume {run_dir}")
    finally:
        trainer.stop()
    print(f"agent: {run_dir / 'agent'}")


def export(args: argparse.Namespace) -> None:
    """Export a run's latest checkpoint as a plain agent folder.

    The trainer writes that export as ``run/agent`` with every checkpoint, so it is copied when it
    is there and loads; otherwise (a run stopped between the two writes, an agent folder damaged
    since) the algorithm is rebuilt from the checkpoint with Ray, which takes a while longer.
    """
    from spiral.runs import checkpoint_iteration, latest_checkpoint, run_experiment

    run = Path(args.run_dir)
    experiment = run_experiment(run)  # before Ray is even imported
    checkpoint = latest_checkpoint(run)
    iteration = checkpoint_iteration(checkpoint) if checkpoint is not None else None
    if iteration is not None and _is_export_of(run / "agent", iteration):
        from envs.storage import copy_folder

        print(f"agent: {copy_folder(run / 'agent', Path(args.out))}  (iteration {iteration})")
        return
    from spiral.rllib.trainer import Trainer, connect

    connect(None)
    trainer = Trainer(Path(args.run_dir), experiment)
    try:
        print(f"agent: {trainer.export(Path(args.out))}  (iteration {trainer.iteration})")
    finally:
        trainer.stop()


def _is_export_of(agent_folder: Path, iteration: int) -> bool:
    """Whether ``agent_folder`` is an agent that loads and was exported at training iteration ``iteration``."""
    from spiral.agent import load_agent

    try:
        training = load_agent(agent_folder).manifest.training
    except (OSError, ValueError):
        return False
    return training is not None and training.iterations == iteration


def paint(args: argparse.Namespace) -> None:
    """Let an exported agent paint (a target, for conditional agents) and write the files."""
    from PIL import Image

    from spiral.agent import load_agent
    from spiral.images import open_image
    from spiral.shipped import default_agent

    target = open_image(args.target) if args.target else None
    agent = load_agent(args.agent or default_agent(conditional=target is not None, picture=target))
    if agent.conditional != (target is not None):  # a named --agent of the other kind (the default never is)
        raise ValueError(f"{args.agent} reconstructs a target: pass --target IMAGE" if agent.conditional else
                         f"{args.agent} paints from scratch and takes no --target")
    episode = agent.paint(target, seed=args.seed, greedy=args.greedy, temperature=args.temperature,
                          proposals=args.proposals, refine=args.refine,
                          first_stroke_temperature=args.first_stroke_temperature)
    paths = write_painting(episode.program, args.out, scale=args.scale)
    if episode.target is not None:
        paths["target"] = Path(args.out) / "target.png"
        Image.fromarray(episode.target).save(paths["target"])
        print(f"l2   {episode.l2:.4f}")
    _report(paths)


def app(args: argparse.Namespace) -> None:
    """Serve the Streamlit app; on 127.0.0.1 unless told otherwise, no telemetry, no file watcher."""
    from spiral.images import MAX_BYTES
    from spiral.shipped import package_dir

    script = package_dir("app") / "spiral_app.py"  # the installed app package, editable or not
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.address", args.address,
               "--server.port", str(args.port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--server.headless", "true", "--client.toolbarMode", "viewer",
               "--server.maxUploadSize", str(MAX_BYTES // 2**20)]  # the upload box states the real limit
    # Streamlit runs every page run in a thread of its own; glibc gives threads malloc arenas of their own
    # and hands little of their freed memory back, so a long session grew (742 -> 887 MiB over 160
    # paintings); with two arenas it stays flat (tests/test_browser.py, the soak test).
    environment = {"MALLOC_ARENA_MAX": "2"} | dict(os.environ)
    # Become the server rather than its parent: a signal to `spiral app` (Ctrl-C, a process manager,
    # `docker stop`) then reaches Streamlit itself, and no orphaned server keeps the port.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, environment)


def evaluate(args: argparse.Namespace) -> None:
    """Score a conditional agent against the blank, random and search baselines; judge an unconditional one."""
    from spiral.agent import check_proposals, load_agent
    from spiral.evaluation import TABLE_HEADER
    from spiral.evaluation import evaluate as evaluate_agent

    agent = load_agent(args.agent)
    check_proposals(args.proposals, agent.conditional, args.refine)
    if args.seed_set is not None and (agent.conditional or not args.validation):
        raise ValueError("--seed-set chooses among the validation seeds of an unconditional agent: it needs "
                         "--validation and an agent that paints from noise"
                         + (f" ({args.agent} paints given images; its validation images are fixed)"
                            if agent.conditional else ""))
    _settle_eval_counts(args, args.agent, agent.conditional)
    if not agent.conditional:
        evaluate_generator(agent, args)
        return
    targets = scored_targets(agent, args.images, validation=args.validation)
    if args.validation:
        print(f"{len(targets)} validation images of {agent.manifest.data.dataset} (the training split's last, "
              f"which spiral train keeps out of training)\n")
    else:
        print(f"{len(targets)} held-out images of {agent.manifest.data.dataset}\n")
    print(TABLE_HEADER)
    for row in evaluate_agent(agent, targets, bank=args.bank, temperature=args.temperature, proposals=args.proposals,
                              refine=args.refine, first_stroke_temperature=args.first_stroke_temperature):
        print(row.row())


# spiral eval's counts: --images and --bank score a reconstruction agent, --samples judges a generator.
EVAL_DEFAULTS = {"images": 50, "bank": 200, "samples": 100}


def _settle_eval_counts(args: argparse.Namespace, folder: str, conditional: bool) -> None:
    """Fill in the counts left out, and refuse those that mean nothing for this kind of agent: a count that
    was silently ignored would leave a user reading a table of another size than the one asked for."""
    foreign = ["--samples"] if conditional else ["--images", "--bank"]
    given = [option for option in foreign if getattr(args, option[2:]) is not None]
    if given:
        kind = ("reconstructs given images (--images and --bank size its table)" if conditional
                else "paints from scratch (--samples sets how many of its paintings are judged)")
        verb = "is" if len(given) == 1 else "are"
        raise ValueError(f"{folder} {kind}: {' and '.join(given)} {verb} for the other kind of agent.")
    for name, default in EVAL_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def scored_targets(agent, count: int, validation: bool = False):
    """The first ``count`` test images of the agent's dataset, as it was trained to see them; with ``validation``, its
    first ``count`` validation images instead (``Experiment.images("validation")``: the training split's last, which
    spiral train keeps out of training), to choose between exports or settings without the test split."""
    from spiral.datasets import load_dataset
    from spiral.experiment import VALIDATION_IMAGES, VALIDATION_MIN_TRAIN, split_training_images

    data = agent.manifest.data
    images = load_dataset(data.dataset, agent.paint_config.canvas_size, color=data.color, invert=data.invert,
                          limit=data.limit if validation else count)  # validation: the training split as trained on
    if not validation:
        return images.test
    validation_images = split_training_images(images.train, "validation")
    if len(validation_images) == 0:
        raise ValueError(f"{data.dataset} has no validation images: its training split has {len(images.train)} "
                         f"images, fewer than the {VALIDATION_MIN_TRAIN} it needs to spare {VALIDATION_IMAGES}.")
    if count > len(validation_images):
        raise ValueError(f"--validation has {len(validation_images)} images (the training split's last, which spiral "
                         f"train keeps out of training), so --images can be at most {len(validation_images)}, "
                         f"not {count}.")
    return validation_images[:count]


def gallery(args: argparse.Namespace) -> None:
    """A grid of an agent's paintings (held-out targets over them) and a replay, for docs."""
    from spiral.agent import load_agent
    from spiral.gallery import write_gallery

    agent = load_agent(args.agent)
    targets = scored_targets(agent, args.count) if agent.conditional else None
    _report(write_gallery(agent, args.out, targets, count=args.count, greedy=not args.sampled))


def curves(args: argparse.Namespace) -> None:
    """Plot runs' TensorBoard scalars to a PNG, over env steps or wall-clock hours."""
    from spiral.curves import L2_TAGS, plot_curves

    if args.label and len(args.label) != len(args.runs):
        raise ValueError(f"{len(args.label)} --label for {len(args.runs)} runs: give one per run, in order.")
    if args.label and len(set(args.label)) < len(args.label):
        raise ValueError(f"--label names repeat ({', '.join(args.label)}): each run needs its own.")
    runs = dict(zip(args.label, args.runs)) if args.label else args.runs
    tags = [tag.strip() for tag in args.tags.split(",") if tag.strip()] if args.tags else None
    references = {tag: {"blank canvas": args.blank} for tag in L2_TAGS} if args.blank is not None else None
    print(plot_curves(runs, args.out, tags=tags, x="both" if args.both else args.x, references=references,
                      smoothing=args.smooth))


def evaluate_generator(agent, args: argparse.Namespace) -> None:
    """Judge an unconditional agent's samples with the classifier of its dataset (Markdown tables)."""
    from spiral.agent import temperature_label
    from spiral.classifier import (DEFAULT_DIR, GENERATOR_VALIDATION_IMAGES, check_supported, load_classifier,
                                   evaluate_generator as judge_samples)
    from spiral.datasets import load_dataset

    dataset = agent.manifest.data.dataset
    check_supported(dataset)
    folder = Path(args.classifier) if args.classifier else DEFAULT_DIR / dataset
    try:
        judge = load_classifier(folder, dataset)
    except FileNotFoundError as error:
        out = f" --out {folder}" if args.classifier else ""
        raise FileNotFoundError(f"{error} Train one with: spiral classifier --dataset {dataset}{out}") from error
    images = load_dataset(dataset, agent.paint_config.canvas_size)  # the dataset's own polarity, as the judge's
    # A validation judges samples of other seeds against the training split's last images: a choice between exports
    # or settings made on it leaves the test split to the final figure.
    split, real = (("training", images.train[-GENERATOR_VALIDATION_IMAGES:]) if args.validation
                   else ("test", images.test))
    first_seed = args.samples * (args.seed_set or 1) if args.validation else 0
    first, later = agent.sampling_temperatures(args.temperature, args.first_stroke_temperature)
    report = judge_samples(agent, judge.classifier, real, args.samples, temperature=later, first_seed=first_seed,
                           split=split, first_stroke_temperature=first)
    print(f"judge: {_shown(Path(judge.path).resolve())} ({judge.dataset}, test accuracy {judge.test_accuracy:.2%})")
    label = temperature_label((first, later))
    own = args.temperature is None and args.first_stroke_temperature is None
    shown = f", {label}" + (" (the agent's own)" if own else "") if label else ""
    print(f"{args.samples} samples (seeds {first_seed} to {first_seed + args.samples - 1}{shown}) against "
          f"{len(real)} {'held-out' if split == 'test' else 'training'} images of {dataset}\n")
    print(report.markdown())


def average(args: argparse.Namespace) -> None:
    """Write the agent whose weights are the weighted mean of several agents' (spiral.agent.write_average)."""
    from spiral.agent import write_average

    out = _agent_out(args.out)
    shown = "equal weights" if args.weights is None else "weights " + ", ".join(f"{w:g}" for w in args.weights)
    print(f"agent: {write_average(out, args.agents, args.weights)}  (the mean of {len(args.agents)} agents, {shown})")


def class_mix(args: argparse.Namespace) -> None:
    """Write a generator that paints its classes as often as its data has them (spiral.class_mix)."""
    from spiral.agent import load_agent, load_weights, write_agent
    from spiral.class_mix import MixSettings, train_class_mix
    from spiral.programs import read_programs

    out = _agent_out(args.out)
    settings = MixSettings(samples=args.samples, epochs=args.epochs, tries=args.tries, seed=args.seed)
    agent = load_agent(args.agent)
    trained = train_class_mix(agent, read_programs(args.programs), settings)
    manifest = dataclasses.replace(agent.manifest, class_mix=trained.class_mix)
    folder = write_agent(out, load_weights(Path(args.agent) / "policy.pt"),
                         load_weights(Path(args.agent) / "discriminator.pt"), manifest, trained.state,
                         provenance=Path(args.agent))

    def shares(mix) -> str:
        return " ".join(f"{share:.1%}" for share in mix)

    print(f"the mix classifier on held-out programs: {trained.held_out_accuracy:.1%} right")
    print(f"classes of the data:      {shares(trained.data_mix)}")
    print(f"classes of the generator: {shares(trained.own_mix)} ({settings.samples} samples)")
    print(f"kept on the first draw:   {shares(trained.class_mix.accept)}; about {trained.mean_draws:.2f} paintings "
          f"a sample, {settings.tries} at most")
    print(f"agent: {folder}")


def _agent_out(path: str) -> Path:
    """``--out`` of a command that writes an agent folder: a new folder, or an agent folder it replaces."""
    out = Path(path)
    if out.is_file() or (out.is_dir() and not (out / "agent.json").is_file() and any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an agent folder: --out replaces the folder it names, so name a "
                         f"new one or an agent folder to replace.")
    return out


def train_judge(args: argparse.Namespace) -> None:
    """Train the classifier that judges unconditional agents of a dataset, and save it."""
    from spiral.classifier import DEFAULT_DIR, save_classifier, train_classifier

    classifier, test_accuracy = train_classifier(args.dataset, epochs=args.epochs, seed=args.seed)
    folder = save_classifier(Path(args.out) if args.out else DEFAULT_DIR / args.dataset, classifier, args.dataset,
                             test_accuracy, epochs=args.epochs, seed=args.seed)
    print(f"test accuracy {test_accuracy:.2%}")
    print(f"classifier: {folder}")


def brushes(_: argparse.Namespace) -> None:
    print("\n".join(available_brushes()))


def _shown(path: Path) -> Path:
    """A path as a user would type it: relative to the working folder when inside it."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def _report(paths: dict[str, Path]) -> None:
    for kind, path in paths.items():
        print(f"{kind:4s} {path}")


TEMPERATURE_HELP = ("sample the strokes at this temperature (default: the agent's own, agent.json's temperature, 1 "
                    "unless it was shipped with another; 1 is the policy's own distribution; below 1: likelier, less "
                    "varied strokes)")
FIRST_STROKE_TEMPERATURE_HELP = ("sample the first stroke at this temperature (default: the agent's own, agent.json's "
                                 "first_stroke_temperature where it names one, else --temperature's): a generator's "
                                 "first stroke chooses much of what it paints")
PROPOSALS_HELP = ("conditional agents: paint each stroke as the best of this many the agent proposes (its own "
                  "choice and samples), each checked against the target first: a lower error for about this many "
                  "times the painting time (default 1: the agent alone)")
REFINE_HELP = ("conditional agents: hill-climb each chosen stroke up to this many rounds (its end or control point "
               "one cell away, its size one step, each checked against the target), as the search refines its "
               "candidates: a lower error for up to 18 renders a round (default 0)")


def _positive(kind: type):
    def parse(text: str):
        value = kind(text)
        if not (value > 0 and math.isfinite(value)):  # nan and inf parse as floats
            raise argparse.ArgumentTypeError(f"must be > 0 and finite, got {text}")
        return value
    return parse


def _at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], got {text}")
    return value


# What a painting's files end in: an --out with one of these names a file where a folder is meant.
_FILE_SUFFIXES = {".png", ".gif", ".json", ".svg", ".jpg", ".jpeg", ".webp"}
PAINTING_OUT_HELP = "the folder for the painting's .png, .gif, .json and .svg (default: output)"


def _output_folder(text: str) -> Path:
    """An --out for painted files: a folder, so that ``--out me.png`` fails at once instead of making a
    folder named me.png, and an existing file is never taken for one."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder; --out names the folder the files are written into")
    if not path.exists() and path.suffix.lower() in _FILE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"--out names a folder the files are written into, not a {path.suffix} "
                                         f"file: try --out {path.with_suffix('')}")
    return path


def demos(args: argparse.Namespace) -> None:
    """Paint training images with the greedy search in the preset's action space: a demonstrations file."""
    from spiral.demonstrations import AgentTeacher, generate_demonstrations
    from spiral.search import SearchSettings
    from spiral.experiment import Experiment

    experiment = Experiment.from_preset(args.preset, args.overrides)
    searching = {"--bank": args.bank, "--jumps": args.jumps, "--guided": args.guided}
    if args.teacher is not None:
        if given := [option for option, value in searching.items() if value is not None]:
            raise ValueError(f"{', '.join(given)} set the search; a --teacher agent paints instead: leave them out.")
        search = AgentTeacher(args.teacher, args.proposals or AgentTeacher.proposals, args.seed, args.refine or 0)
    elif args.proposals is not None:
        raise ValueError("--proposals are a --teacher agent's strokes to choose from: name the teacher.")
    else:
        bank = SearchSettings.bank if args.bank is None else args.bank
        search = SearchSettings(bank=bank, jumps=bank // 4 if args.jumps is None else args.jumps,
                                guided=SearchSettings.guided if args.guided is None else args.guided,
                                refine=SearchSettings.refine if args.refine is None else args.refine, seed=args.seed)
    summary = generate_demonstrations(experiment, args.count, search, args.out, workers=args.workers,
                                      student=args.student, tolerance=args.tolerance)
    print(summary.line())


def programs(args: argparse.Namespace) -> None:
    """Paint a dataset's first images with a reconstruction agent: a JSONL dataset of stroke programs."""
    from spiral.programs import generate_programs

    summary = generate_programs(args.agent, args.dataset, args.out, count=args.count, split=args.split,
                                greedy=args.greedy, seed=args.seed, workers=args.workers, proposals=args.proposals,
                                refine=args.refine)
    print(summary.line())


def pretrain(args: argparse.Namespace) -> None:
    """Behaviour-clone a demonstrations file into the policy (teacher forcing); export RUN/agent."""
    from spiral.pretrain import Pretrainer, PretrainSettings

    given = {key: value for key, value in (("batch", args.batch), ("lr", args.lr), ("precision", args.precision),
                                           ("eval_every", args.eval_every), ("brush", args.brush),
                                           ("lr_end", args.lr_end), ("augment", args.augment and tuple(args.augment)))
             if value is not None}
    if args.resume:
        fixed = ["--batch"] * (args.batch is not None) + ["--init-from"] * (args.init_from is not None)
        if fixed or args.overrides:
            raise ValueError(f"--resume continues {args.out} with its own settings (--lr, --anneal, --lr-end, "
                             "--precision, --eval-every, --brush and --augment excepted): leave out "
                             f"{', '.join(fixed + args.overrides)}.")
        trainer = Pretrainer(Path(args.out), args.demos, corrections=args.corrections, programs=args.programs,
                             anneal_steps=args.anneal, **given)
    elif args.corrections or args.programs:
        option = "--corrections" if args.corrections else "--programs"
        raise ValueError(f"{option} are added to a run that has learned from its own file (--demos): use them with "
                         "--resume.")
    elif args.demos is None:
        raise ValueError("Name the demonstrations to learn from: --demos FILE (made by `spiral demos`).")
    else:
        if args.anneal is not None:
            given["anneal"] = (0, args.anneal)
        trainer = Pretrainer.start(args.demos, Path(args.out), PretrainSettings(**given),
                                   network_overrides=args.overrides, init_from=args.init_from)
    run_dir = _shown(trainer.run_dir)
    print(f"{len(trainer.train_rows)} demonstrations to learn from, {len(trainer.held_rows)} held out; images loaded "
          f"and replayed in {trainer.replay_seconds:.1f} s; step {trainer.step}")
    print(f"tensorboard --logdir {run_dir / 'tb'}")
    try:
        measured = trainer.run(minutes=args.minutes, steps=args.steps)
    except KeyboardInterrupt:
        trainer.checkpoint()
        print(f"stopped at step {trainer.step}; continue with: spiral pretrain --out {run_dir} --resume")
        return
    finally:
        trainer.close()
    print(" ".join(f"{key} {value:.4f}" for key, value in measured.items()) + f" after {trainer.step} steps")
    print(f"agent: {run_dir / 'agent'}")


def _add_pipeline_commands(commands) -> None:
    """``spiral demos`` and ``spiral pretrain``: the stages before RL (DESIGN.md, the learning pipeline)."""
    demos_cmd = commands.add_parser("demos", help="search demonstrations: paint training images with a greedy "
                                                  "stroke search, as JSONL (resumable)")
    demos_cmd.add_argument("--preset", default="mnist-pen", help="a name in train/presets or a .toml path "
                                                                 "(default: mnist-pen)")
    demos_cmd.add_argument("overrides", nargs="*", help="section.field=value, e.g. env.episode_length=10")
    demos_cmd.add_argument("--count", type=_positive(int), required=True, help="the first COUNT training images")
    demos_cmd.add_argument("--bank", type=_positive(int), help="paint candidates tried per step (30)")
    demos_cmd.add_argument("--jumps", type=_at_least(0), help="pen-up-then-paint candidates per step "
                                                             "(default: bank // 4; with a pen flag only)")
    demos_cmd.add_argument("--guided", type=_fraction,
                           help="the fraction of candidates aimed at missing ink, the rest uniform (1.0)")
    demos_cmd.add_argument("--refine", type=_at_least(0),
                           help="hill-climbing rounds on each step's chosen stroke: the search's best candidate "
                                "(default 4), or a --teacher's best proposal (default 0)")
    demos_cmd.add_argument("--seed", type=_at_least(0), default=0)
    demos_cmd.add_argument("--workers", type=_positive(int), default=1, help="processes painting in parallel")
    demos_cmd.add_argument("--out", required=True, help="the JSONL file; an existing one is extended")
    demos_cmd.add_argument("--student", metavar="AGENT", help="write corrections (DAgger): AGENT paints each image, "
                                                              "greedy, and the search labels each of its states")
    demos_cmd.add_argument("--tolerance", type=_fraction, default=0.0,
                           help="with --student: keep the student's own stroke as the label where it gains at least "
                                "1 - TOLERANCE of what the search's gains, e.g. 0.1 (default 0: always the search's)")
    demos_cmd.add_argument("--teacher", metavar="AGENT", help="expert iteration: AGENT paints the demonstrations "
                                                              "instead of the search, greedy, each stroke the best of "
                                                              "--proposals it proposes, hill-climbed --refine rounds "
                                                              "(the search's other options do not apply)")
    demos_cmd.add_argument("--proposals", type=_positive(int), help="with --teacher: strokes to choose from (8)")
    demos_cmd.set_defaults(run=demos)

    pretrain_cmd = commands.add_parser("pretrain", help="behaviour cloning of search demonstrations (or of an agent's "
                                                        "programs) into the policy, by teacher forcing; exports "
                                                        "RUN/agent")
    pretrain_cmd.add_argument("--demos", help="a file made by `spiral demos`, or by `spiral programs` to clone an "
                                              "unconditional generator (with --resume: the run's own)")
    pretrain_cmd.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder")
    pretrain_cmd.add_argument("--minutes", type=_positive(float), default=10.0, help="wall-clock budget (10)")
    pretrain_cmd.add_argument("--steps", type=_positive(int), help="stop after this many Adam steps too")
    pretrain_cmd.add_argument("--batch", type=_positive(int), help="episodes per step (default 64)")
    pretrain_cmd.add_argument("--lr", type=_positive(float), help="Adam's learning rate (default 1e-3; with --resume: "
                              "from now on, e.g. a lower one to finish)")
    pretrain_cmd.add_argument("--anneal", type=_positive(int), metavar="STEPS",
                              help="lower the learning rate from --lr to --lr-end by a half cosine over STEPS steps "
                                   "(with --resume: from the run's current step); then it stays at --lr-end")
    pretrain_cmd.add_argument("--lr-end", type=_positive(float), help="the rate an --anneal ends at")
    pretrain_cmd.add_argument("--eval-every", type=_positive(int), metavar="STEPS",
                              help="steps between held-out NLL measurements (default 50; with --resume: from now on)")
    pretrain_cmd.add_argument("--precision", metavar="{float32,bfloat16}",
                              help="the training pass's arithmetic (default float32; bfloat16: bf16 autocast, on a CPU "
                                   "with AMX or AVX-512 BF16, refused elsewhere; with --resume: from now on)")
    pretrain_cmd.add_argument("--brush", help="paint the demonstrations' strokes with this brush (`spiral brushes`), "
                              "in the replay and in the agent (default: the one they were painted with; with "
                              "--resume: from now on), e.g. spiral/soft_pen")
    pretrain_cmd.add_argument("--augment", action="append", metavar="{channels,mirror}",
                              help="learn from each episode under a random symmetry too (repeatable): channels "
                                   "permutes the colour channels of the canvases, the target and the strokes' "
                                   "colours; mirror flips them left to right (with --resume: from now on)")
    pretrain_cmd.add_argument("--init-from", metavar="AGENT", help="a new run's first weights: this agent's policy "
                              "(same actions and network), e.g. a shipped clone cloned further with another --brush")
    pretrain_cmd.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    pretrain_cmd.add_argument("--corrections", action="append", default=[], metavar="FILE",
                              help="with --resume: also learn from this corrections file (spiral demos --student); "
                                   "repeatable, and remembered by the run")
    pretrain_cmd.add_argument("--programs", action="append", default=[], metavar="FILE",
                              help="with --resume, for a generator: also learn from this programs file of the same "
                                   "images (e.g. spiral programs --sample --seed 1: other ways to paint them); "
                                   "repeatable, and remembered by the run")
    pretrain_cmd.add_argument("overrides", nargs="*", metavar="network.FIELD=VALUE",
                              help="change the network the demonstrations' preset names, e.g. network.hidden=256")
    pretrain_cmd.set_defaults(run=pretrain)


def _add_programs_command(commands) -> None:
    """``spiral programs``: a dataset painted by a reconstruction agent, what a generator of programs learns from."""
    programs_cmd = commands.add_parser("programs", help="stroke programs of a dataset: paint its first images with a "
                                                        "reconstruction agent, as JSONL (resumable)")
    programs_cmd.add_argument("--agent", required=True, help="a reconstruction agent folder (agents/mnist-l2)")
    programs_cmd.add_argument("--dataset", required=True, help="mnist, fashion-mnist, glyphs, lfw, photos or "
                                                               "folder:<path>")
    programs_cmd.add_argument("--out", required=True, help="the JSONL file; an existing one is extended")
    programs_cmd.add_argument("--count", type=_positive(int), help="the first COUNT images of the split "
                                                                   "(default: all of them)")
    programs_cmd.add_argument("--split", choices=("train", "test"), default="train")
    actions = programs_cmd.add_mutually_exclusive_group()
    actions.add_argument("--greedy", dest="greedy", action="store_true", default=True,
                         help="take the likeliest action at each step (the default)")
    actions.add_argument("--sample", dest="greedy", action="store_false", help="sample the actions (seeded)")
    programs_cmd.add_argument("--seed", type=_at_least(0), default=0, help="seeds the sampling, per image (0)")
    programs_cmd.add_argument("--workers", type=_positive(int), default=1,
                              help="paint in this many processes, one core each (1): the same programs, sooner")
    programs_cmd.add_argument("--proposals", type=_positive(int), default=1, help=PROPOSALS_HELP)
    programs_cmd.add_argument("--refine", type=_at_least(0), default=0, help=REFINE_HELP)
    programs_cmd.set_defaults(run=programs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spiral", description="Painting agents with real brush strokes.")
    commands = parser.add_subparsers(dest="command", required=True)

    random_cmd = commands.add_parser("paint-random", help="paint a random episode: PNG, GIF, JSON and SVG")
    random_cmd.add_argument("--out", type=_output_folder, default="output", help=PAINTING_OUT_HELP)
    random_cmd.add_argument("--seed", type=_at_least(0), default=0)
    random_cmd.add_argument("--brush", default="classic/dry_brush", help="see `spiral brushes`")
    random_cmd.add_argument("--canvas-size", type=_positive(int), default=64)
    random_cmd.add_argument("--grid", type=_positive(int), default=32)
    random_cmd.add_argument("--steps", type=_positive(int), default=20, help="strokes per episode")
    random_cmd.add_argument("--scale", type=_positive(float), default=4.0, help="render the files this much larger")
    random_cmd.set_defaults(run=paint_random)

    replay_cmd = commands.add_parser("replay", help="re-render a painting program (.json) at any resolution")
    replay_cmd.add_argument("program", help="a .json program written by spiral")
    replay_cmd.add_argument("--out", type=_output_folder, default="output", help=PAINTING_OUT_HELP)
    replay_cmd.add_argument("--scale", type=_positive(float), default=8.0)
    replay_cmd.add_argument("--brush", help="paint the same strokes with another brush")
    replay_cmd.add_argument("--name", help="file name stem of the outputs (default: the program's)")
    replay_cmd.set_defaults(run=replay)

    train_cmd = commands.add_parser("train", help="train an agent with RLlib (see train/presets)")
    train_cmd.add_argument("--preset", help="a name in train/presets or a .toml path (default: mnist-recon)")
    train_cmd.add_argument("overrides", nargs="*", help="section.field=value, e.g. training.lr=3e-4")
    train_cmd.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    train_cmd.add_argument("--name", help="the run folder's name under --runs-dir (default: <preset>-<time>)")
    train_cmd.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    train_cmd.add_argument("--iterations", type=_positive(int), help="stop after this many (default: preset's)")
    train_cmd.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    train_cmd.add_argument("--pbt", type=_positive(int), metavar="N",
                           help="population-based training of lr and entropy with N trials (Ray Tune)")
    train_cmd.set_defaults(run=train)

    export_cmd = commands.add_parser("export", help="export a run's latest checkpoint as a plain agent folder")
    export_cmd.add_argument("run_dir", metavar="RUN", help="a run folder (runs/<preset>-<time>)")
    export_cmd.add_argument("--out", required=True, help="the agent folder to write")
    export_cmd.set_defaults(run=export)

    paint_cmd = commands.add_parser("paint", help="let an exported agent paint: PNG, GIF, JSON and SVG")
    paint_cmd.add_argument("--agent", help="an agent folder (a run's agent/ or best/; default: with --target, "
                           "the shipped line agent for white-on-black line art and the colour agent for anything "
                           "else; without, the shipped generator)")
    paint_cmd.add_argument("--target", help="an image to reconstruct (conditional agents)")
    paint_cmd.add_argument("--out", type=_output_folder, default="output",
                           help=PAINTING_OUT_HELP + "; target.png beside them")
    paint_cmd.add_argument("--seed", type=_at_least(0), default=0)
    paint_cmd.add_argument("--greedy", action="store_true", help="take the most likely action at each step")
    paint_cmd.add_argument("--temperature", type=_positive(float), default=None, help=TEMPERATURE_HELP)
    paint_cmd.add_argument("--first-stroke-temperature", type=_positive(float), default=None,
                           help=FIRST_STROKE_TEMPERATURE_HELP)
    paint_cmd.add_argument("--proposals", type=_positive(int), default=1, help=PROPOSALS_HELP)
    paint_cmd.add_argument("--refine", type=_at_least(0), default=0, help=REFINE_HELP)
    paint_cmd.add_argument("--scale", type=_positive(float), default=4.0)
    paint_cmd.set_defaults(run=paint)

    gallery_cmd = commands.add_parser("gallery", help="a grid of an agent's paintings and a replay, as PNG and GIF")
    gallery_cmd.add_argument("--agent", required=True, help="an agent folder")
    gallery_cmd.add_argument("--out", type=_output_folder, required=True, help="the folder for grid.png and replay.*")
    gallery_cmd.add_argument("--count", type=_positive(int), default=16, help="paintings in the grid (default 16)")
    gallery_cmd.add_argument("--sampled", action="store_true", help="sample actions instead of taking the likeliest")
    gallery_cmd.set_defaults(run=gallery)

    app_cmd = commands.add_parser("app", help="serve the Streamlit app (http://127.0.0.1:8501)")
    app_cmd.add_argument("--address", default="127.0.0.1", help="listen here (0.0.0.0: every interface)")
    app_cmd.add_argument("--port", type=_positive(int), default=8501)
    app_cmd.set_defaults(run=app)

    eval_cmd = commands.add_parser("eval", help="score a conditional agent against blank, random and search; "
                                                "judge an unconditional one with a classifier")
    eval_cmd.add_argument("--agent", required=True, help="an agent folder")
    eval_cmd.add_argument("--images", type=_positive(int),
                          help=f"conditional agents: held-out images (default {EVAL_DEFAULTS['images']})")
    eval_cmd.add_argument("--bank", type=_at_least(0),
                          help="conditional agents: random strokes the search tries per step (default "
                               f"{EVAL_DEFAULTS['bank']}; 0: no search baselines, neither this one nor the teacher)")
    eval_cmd.add_argument("--samples", type=_at_least(2),
                          help=f"unconditional agents: paintings to judge (default {EVAL_DEFAULTS['samples']})")
    eval_cmd.add_argument("--classifier", metavar="DIR",
                          help="unconditional agents: the judge (default: agents/classifiers/<dataset>)")
    eval_cmd.add_argument("--temperature", type=_positive(float), default=None, help=TEMPERATURE_HELP)
    eval_cmd.add_argument("--first-stroke-temperature", type=_positive(float), default=None,
                          help=FIRST_STROKE_TEMPERATURE_HELP)
    eval_cmd.add_argument("--proposals", type=_positive(int), default=1,
                          help="conditional agents: also score the greedy agent choosing each stroke among this "
                               "many of its own proposals (paint --proposals)")
    eval_cmd.add_argument("--refine", type=_at_least(0), default=0,
                          help="conditional agents: with --proposals, hill-climb each chosen stroke up to this many "
                               "rounds (paint --refine)")
    eval_cmd.add_argument("--validation", action="store_true",
                          help="choose on validation images and keep the test split for the final figure: a "
                               "conditional agent paints the last 100 training images (which spiral train keeps "
                               "out of training); an unconditional one's samples of other seeds (SAMPLES on) are "
                               "judged against the last 10,000 training images")
    eval_cmd.add_argument("--seed-set", type=_positive(int), metavar="N",
                          help="unconditional agents, with --validation: judge the Nth set of SAMPLES seeds "
                               "(seeds N×SAMPLES on; default 1), e.g. 2 to confirm on other samples a choice "
                               "made on the first set (set 0 would be the test's own seeds)")
    eval_cmd.set_defaults(run=evaluate)

    average_cmd = commands.add_parser("average", help="average the weights of agents of the same network, one "
                                                      "trained on from the other (WiSE-FT)")
    average_cmd.add_argument("agents", nargs="+", metavar="AGENT",
                             help="agent folders with the same actions, network and data; the first one's agent.json "
                                  "(name, temperature) and discriminator go with the result")
    average_cmd.add_argument("--weights", type=_positive(float), nargs="+", metavar="W",
                             help="one relative weight per agent (default: equal), normalised to sum to 1")
    average_cmd.add_argument("--out", required=True, help="the agent folder to write (replaced if it is one)")
    average_cmd.set_defaults(run=average)

    mix_cmd = commands.add_parser("class-mix", help="a generator that paints its classes as often as its data has "
                                                    "them: redraw samples of the classes it paints too often")
    mix_cmd.add_argument("--agent", required=True, help="a generator (an agent that paints from scratch)")
    mix_cmd.add_argument("--programs", required=True,
                         help="the programs file it was cloned on (spiral programs): painted with the generator's "
                              "brush and labelled by their dataset, they train the classifier that names a "
                              "sample's class")
    mix_cmd.add_argument("--out", required=True, help="the agent folder to write: the generator with its correction")
    mix_cmd.add_argument("--samples", type=_positive(int), default=3_000,
                         help="samples painted to measure the generator's own mix (default 3000)")
    mix_cmd.add_argument("--epochs", type=_positive(int), default=3, help="the classifier's passes over the programs")
    mix_cmd.add_argument("--tries", type=_positive(int), default=4,
                         help="paintings per sample at most; the last is kept (default 4)")
    mix_cmd.add_argument("--seed", type=_at_least(0), default=0)
    mix_cmd.set_defaults(run=class_mix)

    classifier_cmd = commands.add_parser("classifier", help="train the classifier that judges unconditional agents")
    classifier_cmd.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist (default mnist)")
    classifier_cmd.add_argument("--epochs", type=_positive(int), default=4, help="passes over the training split")
    classifier_cmd.add_argument("--seed", type=_at_least(0), default=0)
    classifier_cmd.add_argument("--out", help="the folder to write (default: agents/classifiers/<dataset>)")
    classifier_cmd.set_defaults(run=train_judge)

    curves_cmd = commands.add_parser("curves", help="plot runs' training curves (TensorBoard scalars) to a PNG")
    curves_cmd.add_argument("runs", nargs="+", metavar="RUN", help="run folders (runs/<preset>-<time>)")
    curves_cmd.add_argument("--out", default="curves.png", help="the PNG to write (default: curves.png)")
    curves_cmd.add_argument("--tags", help="comma-separated scalar tags (default: test L2, D(real)-D(fake), "
                                           "reward, entropy per component, steps/s, as logged)")
    x_axis = curves_cmd.add_mutually_exclusive_group()
    x_axis.add_argument("--x", choices=("steps", "wall"), default="steps", help="env steps or wall-clock hours")
    x_axis.add_argument("--both", action="store_true", help="steps and wall time side by side")
    curves_cmd.add_argument("--label", action="append", help="a legend name per run, in order (default: folder names)")
    curves_cmd.add_argument("--blank", type=float, metavar="L2", help="draw the blank canvas's L2 on the L2 curves")
    curves_cmd.add_argument("--smooth", type=float, default=0.0, metavar="W",
                            help="EMA weight in [0, 1), as TensorBoard's slider; the raw curve stays, faint")
    curves_cmd.set_defaults(run=curves)

    brushes_cmd = commands.add_parser("brushes", help="list the installed libmypaint brushes")
    brushes_cmd.set_defaults(run=brushes)
    _add_pipeline_commands(commands)
    _add_programs_command(commands)
    return parser


class CommandError(SystemExit):
    """A command refused its input or its environment: exit status 2, as argparse's usage errors.

    ``main`` has already written the one-line ``spiral <command>: error: ...`` message to stderr;
    ``str()`` gives it back to Python callers of ``main``.
    """

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def main(argv: list[str] | None = None) -> None:
    """Run a command; bad input ends it with one line on stderr and status 2, never a traceback.

    That covers ValueError (envs.CanvasTooLargeError among them), OSError, ImportError and
    MemoryError; KeyboardInterrupt is left to Python, as before.
    """
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, ImportError, MemoryError) as error:
        if isinstance(error, OSError) and error.strerror and error.filename:  # without Python's "[Errno 2]"
            text = f"{error.strerror}: {error.filename}"
        else:
            text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        text = text or ("out of memory" if isinstance(error, MemoryError) else type(error).__name__)
        message = f"spiral {args.command}: error: {text}"
        print(message, file=sys.stderr)
        raise CommandError(message) from None


if __name__ == "__main__":
    main()
