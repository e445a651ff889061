#!/usr/bin/env bash
# The main job: set everything up, then paint an episode and write it to output/ as PNG, GIF,
# JSON and SVG. Extra arguments go to `spiral paint-random` (see `--help`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
.venv/bin/spiral paint-random --out output "$@"
