"""How the platform runs its processes, read once from the environment (prefix ``BAGULA_``).

Each layer reads its own settings (``ingest_api.settings``, ``orchestration.settings``);
these are the composition root's: where services listen, where local state lives, the
schema's storage mode, and Superset (its own section, prefix ``BAGULA_SUPERSET_``).
"""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAGULA_", extra="ignore")

    # No default: `bagula run` starts a project-local cluster when this is unset; every
    # other command needs it explicitly.
    database_url: str | None = None

    # Where `bagula run` keeps its project-local PostgreSQL cluster (and Dagster's and
    # Superset's local state).
    data_dir: Path = Path(".bagula")
    local_db_port: int = 54329

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Server processes; validation is CPU-bound, so one per core.
    api_workers: int = Field(default=2, gt=0)

    # Prometheus metrics of the API (summed over its workers), on their own port: not public.
    # Port 0: not served.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0)
    # json: one JSON object per log line (with the request id); text: for a terminal.
    log_format: str = Field(default="json", pattern="^(json|text)$")

    # auto: hypertables when the timescaledb extension is installable; off: plain tables.
    timescaledb: str = Field(default="auto", pattern="^(auto|off)$")

    # Dagster's home (dagster.yaml); default: <data_dir>/dagster.
    dagster_home: Path | None = None
    dagster_port: int = 3000

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("BAGULA_DATABASE_URL is not set (e.g. postgresql://user:pass@host:5432/bagula)")
        return self.database_url

    def resolved_dagster_home(self) -> Path:
        return (self.dagster_home or self.data_dir / "dagster").resolve()


class SupersetSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAGULA_SUPERSET_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8088
    # Superset's own virtual environment (its pins clash with ours); default: .venv-superset
    # beside the source tree, made by scripts/ensure-superset.sh.
    venv: Path | None = None
    # Superset's metadata database (users, dashboards). Unset: SQLite under <data_dir>/superset.
    metadata_db_url: SecretStr | None = None
    # Signs sessions and encrypts the stored connection password. Unset with the SQLite
    # metadata database: generated once and kept beside it in <data_dir>/superset; unset
    # with a metadata database of your own: an error (no default key).
    secret_key: SecretStr | None = None
    admin_username: str = "admin"
    # Unset: generated when the admin is created and printed once. Set: the admin's password
    # is reset to it whenever it no longer matches.
    admin_password: SecretStr | None = None
    # The PostgreSQL role Superset reads the marts as (SELECT on schema marts only).
    reader_role: str = Field(default="bagula_superset_reader", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Unset: generated once and kept in <data_dir>/superset/reader-password.
    reader_password: SecretStr | None = None
    # Web server: one process (the SQLite metadata database wants one writer), threads for
    # the charts a dashboard loads in parallel.
    workers: int = Field(default=1, gt=0)
    threads: int = Field(default=8, gt=0)


@lru_cache(maxsize=1)
def get_platform_settings() -> PlatformSettings:
    return PlatformSettings()


@lru_cache(maxsize=1)
def get_superset_settings() -> SupersetSettings:
    return SupersetSettings()
