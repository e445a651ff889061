#!/usr/bin/env bash
# Refreshes requirements.lock: the exact versions that scripts/bootstrap.sh and environment.yml
# install and the test suite is run with. It resolves pyproject.toml's dependencies and its `test`
# extra with pip-tools' pip-compile (pinned below, run from a throwaway virtualenv) for CPython 3.11
# on Linux, with torch held at the CPU build that bootstrap.sh installs.
#   bash scripts/lock.sh                          after editing pyproject.toml: keeps every pin that still fits
#   bash scripts/lock.sh --upgrade                moves every package to its newest allowed release
#   bash scripts/lock.sh --upgrade-package NAME   moves only NAME (repeat for more)
# Then rerun scripts/bootstrap.sh (it reinstalls when the lock changes) and the tests, and commit
# the lock (and environment.yml, whose conda pins this script sets to the lock's versions).
# tests/test_packaging.py checks that the lock, pyproject.toml and environment.yml agree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
PIP=pip==26.3
PIP_TOOLS=pip-tools==7.6.2
TORCH=torch==2.13.0  # the CPU build: pip takes the local 2.13.0+cpu wheel, which declares no nvidia packages
LOCK=requirements.lock

"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { echo "[spiral] the lock is for Python 3.11; set PYTHON to a python3.11" >&2; exit 1; }
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q "$PIP" "$PIP_TOOLS"
echo "$TORCH" > "$tools/cpu-torch.txt"

CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$tools/venv/bin/pip-compile" --quiet --extra test \
    --allow-unsafe --strip-extras --newline lf --no-emit-index-url --no-emit-find-links \
    --no-emit-trusted-host --constraint "$tools/cpu-torch.txt" --output-file "$LOCK" "$@" pyproject.toml

# Stable output: the constraint's temporary path out of the annotations, and torch pinned as
# bootstrap.sh asks for it (==2.13.0 also takes the local 2.13.0+cpu build that pip prefers here).
sed -i -e "s#$tools/##g" -e 's/^torch==\([0-9.]*\)+cpu$/torch==\1/' "$LOCK"
{
    echo "# The exact versions spiral's test suite runs with: its dependencies and the \`test\` extra of"
    echo "# pyproject.toml, for CPython 3.11 on Linux, torch held at the CPU build $TORCH."
    echo "# Made by \`bash scripts/lock.sh\` (pip-compile from $PIP_TOOLS in a throwaway virtualenv,"
    echo "# --extra test --allow-unsafe --strip-extras, no index URLs); edit pyproject.toml, not this file."
    echo "# Installed by scripts/bootstrap.sh: pip install -r $LOCK, then pip install --no-deps -e ."
    cat "$LOCK"
} > "$tools/lock" && mv "$tools/lock" "$LOCK"
echo "[spiral] wrote $LOCK ($(grep -c '^[A-Za-z0-9]' "$LOCK") packages)"

# environment.yml's conda pins (`  - name=version`) follow the lock.
"$tools/venv/bin/python" - "$LOCK" environment.yml <<'PY'
import re
import sys

lock, env = sys.argv[1:]
pins = {name.lower().replace("_", "-"): version
        for name, version in re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)$", open(lock).read(), re.M)}
text = open(env).read()
text = re.sub(r"^(  - )([A-Za-z0-9][\w.-]*)=([^=\s]+)$", lambda m: f"{m[1]}{m[2]}={pins.get(m[2], m[3])}", text,
              flags=re.M)
open(env, "w").write(text)
PY
