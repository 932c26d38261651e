"""All configuration, read once from the environment (prefix ``BAGULA_``)."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAGULA_", extra="ignore")

    # No default: the platform's run command starts a project-local cluster when
    # this is unset; every other command needs it explicitly.
    database_url: str | None = None

    # Where the run command keeps its project-local PostgreSQL cluster.
    data_dir: Path = Path(".bagula")
    local_db_port: int = 54329

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Server processes; validation is CPU-bound, so one per core.
    api_workers: int = Field(default=2, gt=0)

    # The dbt project; default: dbt_project/ beside the source tree.
    dbt_project_dir: Path | None = None

    # Whole-request limits on POST /v1/sessions/ingest.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_batch_sessions: int = Field(default=1000, gt=0)

    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, gt=0)
    # Seconds a request waits for a database connection before answering 503.
    db_timeout_s: float = Field(default=5.0, gt=0)
    # What 503 answers tell clients to wait before retrying.
    retry_after_s: int = Field(default=5, gt=0)

    # auto: hypertables when the timescaledb extension is installable; off: plain tables.
    timescaledb: str = Field(default="auto", pattern="^(auto|off)$")

    # Detection and alerts (Dagster). Critical verdicts are posted, once each, to this
    # Slack-compatible webhook; unset: alerts are kept (status pending) but not sent.
    alert_webhook_url: str | None = None
    alert_timeout_s: float = Field(default=10.0, gt=0)
    # Attempts per delivery pass; what is still undelivered is retried by the next run.
    alert_attempts: int = Field(default=4, gt=0)
    # Dagster's home (dagster.yaml); default: <data_dir>/dagster.
    dagster_home: Path | None = None
    dagster_port: int = 3000

    # Superset (issue 6): settings of the dashboards live in this block.
    superset_host: str = "127.0.0.1"
    superset_port: int = 8088
    # Superset's own virtual environment (its pins clash with ours); default: .venv-superset
    # beside the source tree, made by scripts/ensure-superset.sh.
    superset_venv: Path | None = None
    # Superset's metadata database (users, dashboards). Unset: SQLite under <data_dir>/superset.
    superset_metadata_db_url: SecretStr | None = None
    # Signs sessions and encrypts the stored connection password. Unset with the SQLite
    # metadata database: generated once and kept beside it in <data_dir>/superset; unset
    # with a metadata database of your own: an error (no default key).
    superset_secret_key: SecretStr | None = None
    superset_admin_username: str = "admin"
    # Unset: generated when the admin is created and printed once. Set: the admin's password
    # is reset to it whenever it no longer matches.
    superset_admin_password: SecretStr | None = None
    # The PostgreSQL role Superset reads the marts as (SELECT on schema marts only).
    superset_reader_role: str = Field(default="bagula_superset_reader", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Unset: generated once and kept in <data_dir>/superset/reader-password.
    superset_reader_password: SecretStr | None = None
    # Web server: one process (the SQLite metadata database wants one writer), threads for
    # the charts a dashboard loads in parallel.
    superset_workers: int = Field(default=1, gt=0)
    superset_threads: int = Field(default=8, gt=0)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "BAGULA_DATABASE_URL is not set (e.g. postgresql://user:pass@host:5432/bagula)"
            )
        return self.database_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
