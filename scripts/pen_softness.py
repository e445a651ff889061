"""How soft should the MNIST pen be? The choice behind envs/brushes/spiral/soft_pen.myb, felt_pen.myb
and felt_pen_wide.myb (felt_pen at radius_scale 1.15, chosen on the retrained mnist-pen's programs).

A generator cloned from a reconstruction agent's programs can at best paint those programs; with
classic/pen their canvases have a crisper edge than scanned digits. This re-renders the first
``--count`` programs of a programs file with a brush whose base values are varied (by default
classic/pen's ``anti_aliasing``, libmypaint's edge width, 1 in classic/pen; ``--vary`` takes any
setting and several ``--vary`` make a grid, say ``hardness``, the share of a dab's radius painted
fully opaque, or ``radius_scale``, a factor on every stroke's radius, which the pressure curve of
``radius_logarithmic`` carries because the environment sets its base value per stroke) and
prints the Fréchet distance of their judge features to the last 10,000 training digits, and the
judge's confident share. Training digits only: the test split, which scores
generators (`spiral eval --samples`), plays no part in the choice.

    .venv/bin/python scripts/pen_softness.py runs/gen2/programs.jsonl [--count 2000]
    .venv/bin/python scripts/pen_softness.py runs/gen8/programs.jsonl \\
        --vary anti_aliasing=1.5,2 --vary hardness=0.3,0.4,0.5 --vary radius_scale=1.5,1.7,2
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs.libmypaint import brush_path
from spiral.classifier import DEFAULT_DIR, confident_share, frechet_distance, load_classifier, predict
from spiral.datasets import load_dataset
from spiral.programs import read_programs

REFERENCE = 10_000  # the last training digits: the distribution to match
RADIUS_SCALE = "radius_scale"  # not a libmypaint setting: a factor on the radius (set_radius sets the base value)


def set_value(brush: dict, name: str, value: float, original: dict) -> None:
    """Set a brush setting's base value, or with ``radius_scale`` shift ``radius_logarithmic``'s pressure curve
    (from ``original``'s) by log(value): at any pressure, every radius the strokes ask for times ``value``."""
    if name != RADIUS_SCALE:
        brush["settings"][name]["base_value"] = value
        return
    curve = original["settings"]["radius_logarithmic"]["inputs"].get("pressure", [[0.0, 0.0], [1.0, 0.0]])
    brush["settings"]["radius_logarithmic"]["inputs"]["pressure"] = [[x, y + math.log(value)] for x, y in curve]


def parse_variation(text: str) -> tuple[str, list[float]]:
    """``name=v1,v2,...``: a brush setting and the base values to try."""
    name, _, values = text.partition("=")
    try:
        return name, [float(value) for value in values.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SETTING=V1,V2,... with numbers, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("programs", help="a programs file of MNIST training digits (`spiral programs`)")
    parser.add_argument("--count", type=int, default=2000, help="programs to re-render (the first ones)")
    parser.add_argument("--base", default="classic/pen", help="the brush whose settings vary (classic/pen)")
    parser.add_argument("--vary", type=parse_variation, action="append", metavar="SETTING=V1,V2,...",
                        help="a brush setting's base values to try (default anti_aliasing=1,1.5,1.75,2,2.25,2.5,3); "
                             "several make a grid")
    args = parser.parse_args()
    variations = dict(args.vary or [("anti_aliasing", [1, 1.5, 1.75, 2, 2.25, 2.5, 3])])
    programs = read_programs(args.programs)
    data = programs.header["data"]
    if (data["dataset"], data["split"]) != ("mnist", "train"):
        raise SystemExit(f"{args.programs} paints {data['dataset']} {data['split']} images: this compares with "
                         "MNIST training digits, so it needs MNIST training programs.")
    original = json.loads(brush_path(args.base).read_text())
    brush = json.loads(json.dumps(original))
    if unknown := sorted(set(variations) - set(brush["settings"]) - {RADIUS_SCALE}):
        raise SystemExit(f"{args.base} has no setting {', '.join(unknown)}.")
    judge = load_classifier(DEFAULT_DIR / "mnist", "mnist").classifier
    digits = load_dataset("mnist", programs.config.canvas_size).train
    _, reference = predict(judge, digits[-REFERENCE:])
    records = programs.records[:args.count]
    print(f"{len(records)} programs of {args.programs} re-rendered with {args.base}, "
          f"against the last {REFERENCE} training digits")
    with tempfile.TemporaryDirectory() as folder:
        for number, values in enumerate(itertools.product(*variations.values())):
            label = ", ".join(f"{name} {value:g}" for name, value in zip(variations, values))
            for name, value in zip(variations, values):
                set_value(brush, name, value, original)
            path = Path(folder) / f"brush-{number}.myb"
            path.write_text(json.dumps(brush))
            canvases = np.stack([dataclasses.replace(record.program, brush=str(path)).render()
                                 for record in tqdm(records, desc=label, leave=False)])
            probabilities, features = predict(judge, canvases)
            print(f"{label}: Fréchet distance {frechet_distance(features, reference):6.1f}, "
                  f"confident {confident_share(probabilities):.1%}", flush=True)


if __name__ == "__main__":
    main()
