#!/usr/bin/env bash
# Install what is needed and start the Bagula platform in the foreground.
# Without BAGULA_DATABASE_URL it runs on a project-local PostgreSQL in .bagula/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BAGULA_DATABASE_URL:-}" ]; then
  scripts/ensure-system.sh
fi
scripts/ensure-venv.sh
scripts/ensure-superset.sh
exec .venv/bin/bagula run "$@"
