#!/usr/bin/env bash
# Node.js (18 or newer) and the Node packages of the TypeScript SDK (sdk/typescript), installed
# from the npm registry exactly as its lockfile says (npm ci). tests/sdk/test_typescript.py
# builds the package and runs its Node tests inside the one test command.
set -euo pipefail
cd "$(dirname "$0")/.."

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Node.js 18+ and npm are missing; install them (apt-get install nodejs npm)" >&2
    exit 1
  fi
  echo "installing Node.js and npm with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
if [ "$(node_major)" -lt 18 ]; then
  echo "Node.js $(node --version) is too old: the TypeScript SDK needs 18 or newer" >&2
  exit 1
fi

if [ -f sdk/typescript/package-lock.json ]; then
  (cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error)
fi
