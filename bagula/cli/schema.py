"""`bagula db ...`: the database schema (alembic migrations in ingest_api/migrations)."""

from __future__ import annotations

import click

from bagula.cli.common import database_url
from bagula.settings import get_platform_settings
from ingest_api import db


def upgrade_schema(url: str) -> None:
    """Apply pending migrations and say how time series are stored."""
    db.upgrade(url, get_platform_settings().timescaledb)
    tables = db.hypertables(url)
    click.echo(f"schema at revision {db.current_revision(url)}", err=True)
    if tables:
        click.echo(f"timescaledb: hypertables {', '.join(tables)}", err=True)
    else:
        click.echo("timescaledb: not installed; plain PostgreSQL tables (no hypertables)", err=True)


@click.group(name="db", help="Database schema.")
def db_group() -> None:
    pass


@db_group.command("upgrade", help="Apply pending migrations (idempotent).")
def db_upgrade() -> None:
    upgrade_schema(database_url())
