#!/usr/bin/env bash
# Superset's own virtual environment in .venv-superset (its pins clash with the rest of the
# stack), with the exact versions of superset/constraints.txt; quick when already there.
# Usage: scripts/ensure-superset.sh [--browser]
#   --browser  also Debian's chromium and chromium-driver (the dashboard tests need them)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${BAGULA_SUPERSET_VENV:-.venv-superset}
python=${PYTHON:-python3}
superset_version=6.1.0
stamp="$venv/.bagula-installed"
wanted="apache-superset[postgres]==$superset_version $(sha256sum superset/constraints.txt | cut -d' ' -f1)"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "installing Superset $superset_version into $venv" >&2
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  # rich and cachetools are used by 6.1 but missing from its metadata; flask-caching<2.4
  # (and everything else) is pinned by the constraints.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c superset/constraints.txt "apache-superset[postgres]==$superset_version" rich cachetools
  echo "$wanted" > "$stamp"
fi

if [ "${1:-}" = "--browser" ]; then
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "chromium and chromium-driver are missing; install them (apt-get install chromium chromium-driver)" >&2
      exit 1
    fi
    echo "installing chromium and chromium-driver with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi
