#!/usr/bin/env bash
# The main job: set everything up, then serve the app on http://127.0.0.1:8501 (Ctrl-C stops it).
# It opens on the shipped agents (agents/), and offers every agent exported under runs/ and untrained ones.
# Extra arguments go to `spiral app` (e.g. --port 8502, --address 0.0.0.0).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec .venv/bin/spiral app "$@"
