"""Schema migrations (alembic) and facts about the connected database."""

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def sqlalchemy_url(database_url: str) -> str:
    """Alembic goes through SQLAlchemy; point it at the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix):]
    return database_url


def alembic_config(database_url: str, timescaledb: str = "auto") -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in URL-encoded passwords.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    config.attributes["timescaledb"] = timescaledb
    return config


def upgrade(database_url: str, timescaledb: str = "auto") -> None:
    """Apply every pending migration; a no-op when the schema is current. "heads": while two
    lines of migrations are developed side by side, both apply (a merge revision joins them)."""
    command.upgrade(alembic_config(database_url, timescaledb), "heads")


def current_revision(database_url: str) -> str | None:
    with psycopg.connect(database_url) as conn:
        exists = conn.execute("select to_regclass('alembic_version')").fetchone()[0]
        if exists is None:
            return None
        row = conn.execute("select version_num from alembic_version").fetchone()
        return row[0] if row else None


def timescaledb_unusable(scalar) -> str | None:
    """Why hypertables cannot be used on this server (None when they can). ``scalar(sql)``
    runs a query and returns its one value: callers bring their own connection. Installed is
    not enough: the library must be preloaded, or `create extension` fails."""
    if not scalar("select count(*) from pg_available_extensions where name = 'timescaledb'"):
        return "the timescaledb extension is not installed on this server"
    if scalar("select count(*) from pg_extension where extname = 'timescaledb'"):
        return None
    preloaded = scalar("select current_setting('shared_preload_libraries')") or ""
    if "timescaledb" not in [name.strip() for name in preloaded.split(",")]:
        return ("timescaledb is installed but not preloaded: add it to shared_preload_libraries "
                "in postgresql.conf and restart PostgreSQL")
    return None


def timescaledb_status(database_url: str) -> str | None:
    """timescaledb_unusable for the database at this URL."""
    with psycopg.connect(database_url) as conn:
        return timescaledb_unusable(lambda sql: conn.execute(sql).fetchone()[0])


def hypertables(database_url: str) -> list[str]:
    """Names of the tables that are TimescaleDB hypertables (empty on plain PostgreSQL)."""
    with psycopg.connect(database_url) as conn:
        installed = conn.execute(
            "select 1 from pg_extension where extname = 'timescaledb'"
        ).fetchone()
        if not installed:
            return []
        rows = conn.execute(
            "select hypertable_name from timescaledb_information.hypertables order by 1"
        ).fetchall()
        return [r[0] for r in rows]
