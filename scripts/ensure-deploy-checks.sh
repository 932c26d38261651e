#!/usr/bin/env bash
# Tools that check the deployment files without a container engine (their own venv).
set -euo pipefail
cd "$(dirname "$0")/.."
