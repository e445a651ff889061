"""How long MNIST takes to reach the canvas size: padded all at once against one image at a time.

Every conditional training process (the driver, each env runner) and every generator evaluation
loads the whole of MNIST at the canvas size. ``spiral.datasets`` pads the digits in two Pillow
passes over strips of all of them (``_pad_all``); the baseline is what it did before, and what
a plain loop would do: ``ImageOps.pad`` of each digit. Both run on the same digits in the same
run, their pixels are checked equal, and the ratio is printed. Decoding the package's file
(about a second) is outside both timings.

    python benchmarks/dataset_load.py [--size 64] [--count 70000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image, ImageOps

from spiral.datasets import _mnist_arrays, _pad_all, _resampling


def one_by_one(digits: np.ndarray, size: int) -> np.ndarray:
    """ImageOps.pad of each digit, as a loop over the images does it."""
    method = _resampling((28, 28), (size, size))
    return np.stack([np.asarray(ImageOps.pad(Image.fromarray(digit), (size, size), method, color=0))
                     for digit in digits])


def best_of(repeats: int, function, *args) -> tuple[float, np.ndarray]:
    """The fastest of ``repeats`` runs (seconds) and its result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="canvas side in pixels (default 64)")
    parser.add_argument("--count", type=int, default=70_000, help="digits to pad (default all 70,000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest counts (default 3)")
    args = parser.parse_args()
    (train, _), (test, _) = _mnist_arrays()
    digits = np.concatenate([train, test])[:args.count]
    baseline, expected = best_of(args.repeats, one_by_one, digits, args.size)
    batched, padded = best_of(args.repeats, _pad_all, digits, (args.size, args.size))
    assert np.array_equal(expected, padded), "the batched padding changed pixels"
    print(f"{len(digits):,} MNIST digits to {args.size}x{args.size} px, best of {args.repeats}:")
    print(f"  ImageOps.pad one by one   {baseline:6.2f} s")
    print(f"  spiral.datasets._pad_all  {batched:6.2f} s   (same pixels)")
    print(f"  speed-up                  {baseline / batched:6.2f}x")


if __name__ == "__main__":
    main()
