"""The ``spiral`` command: ``spiral paint-random``, ``spiral replay``, ``spiral brushes``."""

from __future__ import annotations

import argparse
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


def brushes(_: argparse.Namespace) -> None:
    print("\n".join(available_brushes()))


def _report(paths: dict[str, Path]) -> None:
    for kind, path in paths.items():
        print(f"{kind:4s} {path}")


def _positive(kind: type):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spiral", description="Painting agents with real brush strokes.")
    commands = parser.add_subparsers(dest="command", required=True)

    random_cmd = commands.add_parser("paint-random", help="paint a random episode: PNG, GIF, JSON and SVG")
    random_cmd.add_argument("--out", default="output", help="output folder (default: output)")
    random_cmd.add_argument("--seed", type=int, default=0)
    random_cmd.add_argument("--brush", default="classic/dry_brush", help="see `spiral brushes`")
    random_cmd.add_argument("--canvas-size", type=_positive(int), default=64)
    random_cmd.add_argument("--grid", type=_positive(int), default=32)
    random_cmd.add_argument("--steps", type=_positive(int), default=20, help="strokes per episode")
    random_cmd.add_argument("--scale", type=_positive(float), default=4.0, help="render the files this much larger")
    random_cmd.set_defaults(run=paint_random)

    replay_cmd = commands.add_parser("replay", help="re-render a painting program (.json) at any resolution")
    replay_cmd.add_argument("program", help="a .json program written by spiral")
    replay_cmd.add_argument("--out", default="output")
    replay_cmd.add_argument("--scale", type=_positive(float), default=8.0)
    replay_cmd.add_argument("--brush", help="paint the same strokes with another brush")
    replay_cmd.add_argument("--name", help="file name stem of the outputs (default: the program's)")
    replay_cmd.set_defaults(run=replay)

    brushes_cmd = commands.add_parser("brushes", help="list the installed libmypaint brushes")
    brushes_cmd.set_defaults(run=brushes)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, ImportError) as error:
        sys.exit(f"spiral {args.command}: error: {error}")


if __name__ == "__main__":
    main()
