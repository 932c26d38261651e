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
    """Apply every pending migration; a no-op when the schema is current."""
    command.upgrade(alembic_config(database_url, timescaledb), "head")


def current_revision(database_url: str) -> str | None:
    with psycopg.connect(database_url) as conn:
        exists = conn.execute("select to_regclass('alembic_version')").fetchone()[0]
        if exists is None:
            return None
        row = conn.execute("select version_num from alembic_version").fetchone()
        return row[0] if row else None


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
