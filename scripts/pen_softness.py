"""How soft should the MNIST pen be? The choice behind envs/brushes/spiral/soft_pen.myb.

A generator cloned from a reconstruction agent's programs can at best paint those programs; with
classic/pen their canvases have a crisper edge than scanned digits. This re-renders the first
``--count`` programs of a programs file with classic/pen at each ``anti_aliasing`` value (libmypaint's
edge width, 1 in classic/pen) and prints the Fréchet distance of their judge features to the last
10,000 training digits, and the judge's confident share. Training digits only: the test split,
which scores generators (`spiral eval --samples`), plays no part in the choice.

    .venv/bin/python scripts/pen_softness.py runs/gen2/programs.jsonl [--count 2000] [--values 1,1.5,2,2.5,3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs.libmypaint import brush_path
from spiral.classifier import DEFAULT_DIR, confident_share, frechet_distance, load_classifier, predict
from spiral.datasets import load_dataset
from spiral.programs import read_programs

REFERENCE = 10_000  # the last training digits: the distribution to match


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("programs", help="a programs file of MNIST training digits (`spiral programs`)")
    parser.add_argument("--count", type=int, default=2000, help="programs to re-render (the first ones)")
    parser.add_argument("--values", default="1,1.5,1.75,2,2.25,2.5,3", help="anti_aliasing values, comma-separated")
    args = parser.parse_args()
    programs = read_programs(args.programs)
    data = programs.header["data"]
    if (data["dataset"], data["split"]) != ("mnist", "train"):
        raise SystemExit(f"{args.programs} paints {data['dataset']} {data['split']} images: this compares with "
                         "MNIST training digits, so it needs MNIST training programs.")
    judge = load_classifier(DEFAULT_DIR / "mnist", "mnist").classifier
    digits = load_dataset("mnist", programs.config.canvas_size).train
    _, reference = predict(judge, digits[-REFERENCE:])
    pen = json.loads(brush_path("classic/pen").read_text())
    records = programs.records[:args.count]
    print(f"{len(records)} programs of {args.programs} re-rendered, against the last {REFERENCE} training digits")
    with tempfile.TemporaryDirectory() as folder:
        for value in (float(text) for text in args.values.split(",")):
            pen["settings"]["anti_aliasing"]["base_value"] = value
            brush = Path(folder) / f"pen-{value}.myb"
            brush.write_text(json.dumps(pen))
            canvases = np.stack([dataclasses.replace(record.program, brush=str(brush)).render()
                                 for record in tqdm(records, desc=f"anti_aliasing {value:g}", leave=False)])
            probabilities, features = predict(judge, canvases)
            print(f"anti_aliasing {value:4g}: Fréchet distance {frechet_distance(features, reference):6.1f}, "
                  f"confident {confident_share(probabilities):.1%}", flush=True)


if __name__ == "__main__":
    main()
