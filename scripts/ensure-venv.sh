#!/usr/bin/env bash
# The project's virtual environment in .venv, with the given extras installed, at the versions
# of constraints.txt: the same ones the images install, so the tests run what they ship.
# Usage: scripts/ensure-venv.sh [extras]   e.g. scripts/ensure-venv.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
target="."
if [ -n "${1:-}" ]; then target=".[$1]"; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --constraint constraints.txt -e "$target"
