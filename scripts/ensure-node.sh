#!/usr/bin/env bash
# Node packages of the TypeScript SDK (sdk/typescript), from the npm registry with the lockfile.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f sdk/typescript/package-lock.json ]; then
  (cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error)
fi
