"""The platform's Dagster instance: run and event storage in Bagula's own PostgreSQL.

Dagster's tables live in the schema ``dagster`` (created by migration 0002) so
that its migrations and ours never meet (both keep an ``alembic_version``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

STORAGE_URL_ENV = "BAGULA_DAGSTER_STORAGE_URL"

# Runs are queued and run one at a time: every run that builds the marts must see
# the previous one's result (incremental models), and detection runs are short.
INSTANCE_YAML = f"""\
# Written by `bagula run` (and `bagula dagster ...`); edits are overwritten.
storage:
  postgres:
    postgres_url:
      env: {STORAGE_URL_ENV}
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1
    dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""


def storage_url(database_url: str) -> str:
    """The database URL with Dagster's schema first on the search path, for psycopg2:
    dagster-postgres needs that driver (SQLAlchemy 2.1 would pick psycopg 3 for
    postgresql://, and Dagster's NOTIFY with a bound parameter fails there)."""
    parts = urlsplit(database_url)._replace(scheme="postgresql+psycopg2")
    options = quote("-csearch_path=dagster")
    query = f"{parts.query}&options={options}" if parts.query else f"options={options}"
    return urlunsplit(parts._replace(query=query))


def prepare(home: Path, database_url: str) -> dict[str, str]:
    """Write dagster.yaml into ``home``; returns the environment Dagster's processes need."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    return {"DAGSTER_HOME": str(home), STORAGE_URL_ENV: storage_url(database_url),
            "BAGULA_DATABASE_URL": database_url}


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def webserver_command(host: str, port: int) -> list[str]:
    return [_tool("dagster-webserver"), "-m", "orchestration.definitions", "-h", host, "-p", str(port)]


def daemon_command() -> list[str]:
    return [_tool("dagster-daemon"), "run", "-m", "orchestration.definitions"]
