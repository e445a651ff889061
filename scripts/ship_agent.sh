#!/usr/bin/env bash
# Ship a run's agent with the project: agents/NAME gets one of its exports (agent.json and
# plain state_dicts), the exact experiment.json it was trained with, and the scalars of the run's
# TensorBoard logs (so `spiral curves agents/NAME` redraws its curves).
# Usage: scripts/ship_agent.sh RUN NAME [EXPORT] [--float16] [--temperature T [--first-stroke-temperature F]]
# EXPORT is the run's agent folder to ship: best (the default where the run has one), agent, or another one
# written into the run, e.g. by `spiral average ... --out RUN/average`.
# --float16 stores the policy's weights in float16, half the bytes (spiral.agent.store_in_float16): for a large
# network; measure the shipped folder afterwards, since it is the rounded weights.
# --temperature T: the agent's samples are drawn at T unless a caller names another (spiral.agent.set_temperature);
# choose it with `spiral eval --validation --temperature`, never on the test split.
# --first-stroke-temperature F: the first stroke at F instead (a generator's first stroke chooses what it paints);
# with --temperature, chosen the same way (`spiral eval --validation --first-stroke-temperature`).
set -euo pipefail
half=false
temperature=""
first_stroke=""
positional=()
while (($#)); do
  case "$1" in
    --float16) half=true ;;
    --temperature) temperature=${2:?--temperature needs a value}; shift ;;
    --first-stroke-temperature) first_stroke=${2:?--first-stroke-temperature needs a value}; shift ;;
    --*) echo "unknown option $1 (the options: --float16, --temperature T, --first-stroke-temperature F)" >&2; exit 1 ;;
    *) positional+=("$1") ;;
  esac
  shift
done
set -- "${positional[@]}"
[[ -z "$first_stroke" || -n "$temperature" ]] || {
  echo "--first-stroke-temperature goes with --temperature" >&2; exit 1; }
run=${1:?usage: scripts/ship_agent.sh RUN_DIR NAME}
name=${2:?usage: scripts/ship_agent.sh RUN_DIR NAME}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# best/ is the export that painted the run's validation images best (training images kept out of
# training: the test split plays no part in the choice); agents that paint from scratch have only
# agent/. Runs made before the validation split chose best/ on test images: ship their agent/.
export=${3:-best}
[[ "$export" =~ ^[A-Za-z0-9._-]+$ && "$export" != .* ]] || { echo "the export to ship is a folder of the run (agent, best, ...), got $export" >&2; exit 1; }
[[ -e "$run/$export/agent.json" || $# -ge 3 ]] || export=agent
for needed in $export/agent.json experiment.json tb; do
  [[ -e "$run/$needed" ]] || { echo "$run has no $needed: is it a spiral run folder?" >&2; exit 1; }
done
staging="$root/agents/.$name-staging"
rm -rf "$staging"
cp -r "$run/$export" "$staging"
cp "$run/experiment.json" "$staging/"
if $half; then
  "$root/.venv/bin/python" -c 'import sys; from spiral.agent import store_in_float16; store_in_float16(sys.argv[1])' \
    "$staging"
fi
if [[ -n "$temperature" ]]; then
  "$root/.venv/bin/python" -c 'import sys; from spiral.agent import set_temperature
set_temperature(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]) if sys.argv[3] else None)' \
    "$staging" "$temperature" "$first_stroke" || {
    rm -rf "$staging"
    echo "--temperature and --first-stroke-temperature are numbers > 0, got $temperature ${first_stroke:-}" >&2; exit 1; }
fi
"$root/.venv/bin/python" -c 'import sys; from spiral.curves import copy_scalars; copy_scalars(*sys.argv[1:])' \
  "$run" "$staging/tb"  # the scalars only: the painting grids are most of the logs' size
rm -rf "$root/agents/$name"
mv "$staging" "$root/agents/$name"
echo "shipped $run as agents/$name"
