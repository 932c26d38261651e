#!/usr/bin/env bash
# System packages the platform and its tests need: PostgreSQL server binaries.
set -euo pipefail

have_postgres() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}

if ! have_postgres; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL server binaries are missing; install them (apt-get install postgresql) or set BAGULA_DATABASE_URL" >&2
    exit 1
  fi
  echo "installing PostgreSQL server binaries with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi
