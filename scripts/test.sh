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
exec .venv/bin/python -m pytest "$@"
