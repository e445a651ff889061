#!/usr/bin/env bash
# Every figure and table of docs/RESULTS.md, from the shipped agents in agents/ (their weights and
# TensorBoard logs). About 30 minutes on 2 cores, most of it the greedy-search baseline.
# Usage: scripts/make_results.sh [IMAGES] [BANK]   (defaults: 50 held-out images, 1000 strokes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
images=${1:-50}
bank=${2:-1000}
spiral=.venv/bin/spiral
out=docs/results
mkdir -p "$out"

# The default reconstruction agent, on the first 500 test digits (the target's measure), and with
# the search baselines on the first 100 of them (on 500, the searches alone take half an hour).
mkdir -p "$out/mnist-pen"
$spiral eval --agent agents/mnist-pen --images 500 --bank 0 | tee "$out/mnist-pen/eval.md"
$spiral eval --agent agents/mnist-pen --images 100 --bank 200 | tee "$out/mnist-pen/eval-search.md"
$spiral gallery --agent agents/mnist-pen --out "$out/mnist-pen" --count 32
$spiral curves agents/mnist-pen --x wall --out "$out/mnist-pen/curves.png"
# What each stage of the pipeline buys: greedy MSE at the end of each stage against the CPU-hours
# spent so far (the figures of docs/RESULTS.md's tables, in docs/results/stages.json).
.venv/bin/python scripts/plot_stages.py "$out/stages.json" "$out/stages.png"

for agent in mnist-l2 mnist-recon; do
  mkdir -p "$out/$agent"
  $spiral eval --agent "agents/$agent" --images "$images" --bank "$bank" | tee "$out/$agent/eval.md"
  $spiral gallery --agent "agents/$agent" --out "$out/$agent"
  $spiral curves "agents/$agent" --both --out "$out/$agent/curves.png"
done

# The glyph agent on the first 500 test glyphs (characters absent from its training split).
mkdir -p "$out/glyphs-pen"
$spiral eval --agent agents/glyphs-pen --images 500 --bank 0 | tee "$out/glyphs-pen/eval.md"
$spiral gallery --agent agents/glyphs-pen --out "$out/glyphs-pen" --count 32
$spiral curves agents/glyphs-pen --x wall --out "$out/glyphs-pen/curves.png"

# The colour agents (#11) on held-out photo crops (the three test photos) and faces (the 20 test
# faces), against the blank canvas, random strokes and the greedy search over 1,000 random strokes a
# step (each in the colour of least error), about 15 minutes of the search; and the agents choosing each
# stroke among 8 of their own proposals.
for pair in photos-paint:50 lfw-paint:20; do
  agent=${pair%%:*}
  mkdir -p "$out/$agent"
  $spiral eval --agent "agents/$agent" --images "${pair##*:}" --bank "$bank" --proposals 8 | tee "$out/$agent/eval.md"
  $spiral gallery --agent "agents/$agent" --out "$out/$agent" --count 16
  $spiral curves "agents/$agent" --x wall --out "$out/$agent/curves.png"
done

# The default generator, on #10's measure (1,000 samples), and the generator trained from scratch.
mkdir -p "$out/mnist-pen-gen"
$spiral eval --agent agents/mnist-pen-gen --samples 1000 | tee "$out/mnist-pen-gen/eval.md"
$spiral gallery --agent agents/mnist-pen-gen --out "$out/mnist-pen-gen" --count 32 --sampled
$spiral curves agents/mnist-pen-gen --out "$out/mnist-pen-gen/curves.png"  # steps: its runs lie days apart

mkdir -p "$out/mnist-gen"
$spiral eval --agent agents/mnist-gen --samples 200 | tee "$out/mnist-gen/eval.md"
$spiral gallery --agent agents/mnist-gen --out "$out/mnist-gen" --count 32 --sampled
$spiral curves agents/mnist-gen --both --out "$out/mnist-gen/curves.png"

# The learner's precision (#12): eight 10-minute mnist-l2 runs, from their kept scalars.
.venv/bin/python scripts/plot_precision.py docs/results/scalars/precision "$out/precision.png"

# reward-modes.png is not redrawn: the final-reward run's scalars were never committed (a `runs/`
# pattern in .gitignore matched docs/results/runs/; it is `/runs/` now, and kept scalars live in
# docs/results/scalars/).
