#!/usr/bin/env bash
# Install what is needed and run the whole test suite. The tests start their own
# throw-away PostgreSQL; pytest fails when it collects no tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-system.sh
scripts/ensure-venv.sh dev
scripts/ensure-superset.sh --browser
scripts/ensure-node.sh
scripts/ensure-deploy-checks.sh
# Two pytest-xdist workers: the tests wait on PostgreSQL, dbt, Superset and Chromium about half
# the time. Each worker runs whole modules (tests/conftest.py says which go first); `-n 0` runs
# them in one process.
exec .venv/bin/python -m pytest -n 2 "$@"
