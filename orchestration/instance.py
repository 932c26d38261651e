"""The platform's Dagster instance: run and event storage in Bagula's own PostgreSQL.

Dagster's tables live in the schema ``dagster`` (created by migration 0002) so
that its migrations and ours never meet (both keep an ``alembic_version``).

``prepare`` writes ``dagster.yaml`` at every start of a Dagster process, from settings read
from the environment (prefix ``BAGULA_DAGSTER_``):

- ``BAGULA_DAGSTER_STORAGE_URL``: Dagster's storage as a SQLAlchemy URL with the psycopg2
  driver (``postgresql+psycopg2://bagula_dagster:…@db:5432/bagula``), e.g. as a role of its
  own whose search path is ``dagster`` (``bagula db roles``). Unset: ``BAGULA_DATABASE_URL``
  with the schema ``dagster`` first on the search path.
- ``BAGULA_DAGSTER_TELEMETRY``: Dagster's usage statistics; off unless set to ``true``.
- ``BAGULA_DAGSTER_INSTANCE_CONFIG``: a YAML file of further ``dagster.yaml`` settings, each
  top-level key replacing the platform's (deploy/k8s puts ``run_launcher: K8sRunLauncher``
  and ``run_monitoring`` there); the storage stays the platform's.

The UI never shows its newsletter prompt (``nux``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

STORAGE_URL_ENV = "BAGULA_DAGSTER_STORAGE_URL"
STORAGE_SCHEME = "postgresql+psycopg2"
HEADER = "# Written by `bagula run` (and `bagula dagster ...`) at every start; edits are overwritten.\n"


class InstanceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAGULA_DAGSTER_", extra="ignore")

    storage_url: SecretStr | None = None
    telemetry: bool = False
    instance_config: Path | None = None


def storage_url(database_url: str) -> str:
    """The database URL with Dagster's schema first on the search path, for psycopg2:
    dagster-postgres needs that driver (SQLAlchemy 2.1 would pick psycopg 3 for
    postgresql://, and Dagster's NOTIFY with a bound parameter fails there)."""
    parts = urlsplit(database_url)._replace(scheme=STORAGE_SCHEME)
    options = quote("-csearch_path=dagster")
    query = f"{parts.query}&options={options}" if parts.query else f"options={options}"
    return urlunsplit(parts._replace(query=query))


def instance_config(settings: InstanceSettings) -> dict:
    """What dagster.yaml holds; the storage URL itself stays in the environment."""
    config: dict = {
        "storage": {"postgres": {"postgres_url": {"env": STORAGE_URL_ENV}}},
        # Runs are queued and run one at a time: every run that builds the marts must see
        # the previous one's result (incremental models), and detection runs are short.
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": 1, "dequeue_interval_seconds": 1},
        },
        # Nothing leaves the installation unless asked for; no newsletter prompt in the UI.
        "telemetry": {"enabled": settings.telemetry},
        "nux": {"enabled": False},
    }
    if settings.instance_config is not None:
        extra = yaml.safe_load(settings.instance_config.read_text()) or {}
        if not isinstance(extra, dict):
            raise ValueError(f"{settings.instance_config}: expected a mapping of dagster.yaml settings")
        if "storage" in extra:
            raise ValueError(f"{settings.instance_config}: the storage is the platform's ({STORAGE_URL_ENV})")
        config.update(extra)
    return config


def prepare(home: Path, database_url: str, settings: InstanceSettings | None = None) -> dict[str, str]:
    """Write dagster.yaml into ``home``; returns the environment Dagster's processes need."""
    settings = settings or InstanceSettings()
    if settings.storage_url is not None:
        url = settings.storage_url.get_secret_value()
        if urlsplit(url).scheme != STORAGE_SCHEME:
            raise ValueError(
                f"{STORAGE_URL_ENV} must use the psycopg2 driver: {STORAGE_SCHEME}://user:password@host/db"
            )
    else:
        url = storage_url(database_url)
    home.mkdir(parents=True, exist_ok=True)
    # Atomically: the webserver and the daemon may share the folder and start together.
    written = home / f".dagster.yaml.{os.getpid()}"
    written.write_text(HEADER + yaml.safe_dump(instance_config(settings), sort_keys=False))
    os.replace(written, home / "dagster.yaml")
    return {"DAGSTER_HOME": str(home), STORAGE_URL_ENV: url, "BAGULA_DATABASE_URL": database_url}


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def webserver_command(host: str, port: int) -> list[str]:
    return [_tool("dagster-webserver"), "-m", "orchestration.definitions", "-h", host, "-p", str(port)]


def daemon_command() -> list[str]:
    return [_tool("dagster-daemon"), "run", "-m", "orchestration.definitions"]
