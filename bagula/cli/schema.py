"""`bagula db ...`: the database schema (alembic migrations in ingest_api/migrations), the
services' roles (bagula/roles.py), and a deployment's one-shot init."""

from __future__ import annotations

import click
import psycopg

from bagula.cli.common import database_url
from bagula.roles import RolePasswords, RolesError, ensure_roles
from bagula.settings import get_platform_settings, get_superset_settings
from ingest_api import db
from ingest_api.store import keys


def upgrade_schema(url: str) -> None:
    """Apply pending migrations and say how time series are stored."""
    db.upgrade(url, get_platform_settings().timescaledb)
    tables = db.hypertables(url)
    click.echo(f"schema at revision {db.current_revision(url)}", err=True)
    if tables:
        click.echo(f"timescaledb: hypertables {', '.join(tables)}", err=True)
    else:
        reason = db.timescaledb_status(url) or "BAGULA_TIMESCALEDB=off"
        click.echo(f"timescaledb: {reason}; plain PostgreSQL tables (no hypertables)", err=True)


@click.group(name="db", help="Database schema and roles.")
def db_group() -> None:
    pass


@db_group.command("upgrade", help="Apply pending migrations (idempotent).")
def db_upgrade() -> None:
    upgrade_schema(database_url())


def apply_roles(url: str) -> None:
    try:
        lines = ensure_roles(url, RolePasswords(), get_superset_settings())
    except RolesError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(lines), err=True)


@db_group.command(
    "roles",
    help="Create or update one least-privilege login role per service (API, dbt and "
    "detection, Dagster's storage, Superset) and their privileges; run it as the "
    "database's owner after every upgrade (idempotent). Passwords from "
    "BAGULA_DB_INGEST_PASSWORD, BAGULA_DB_TRANSFORM_PASSWORD, BAGULA_DB_DAGSTER_PASSWORD, "
    "BAGULA_SUPERSET_READER_PASSWORD, optionally BAGULA_DB_SUPERSET_PASSWORD (Superset's "
    "metadata database).",
)
def db_roles() -> None:
    apply_roles(database_url())


@db_group.command(
    "init",
    help="A deployment's one-shot init, at every start: migrations, with --roles the "
    "services' roles, and a first API key for the project when it has none (the key "
    "alone is the last line of stdout, shown once).",
)
@click.option("--roles", "with_roles", is_flag=True, help="also `bagula db roles`")
@click.option("--project", default="default", show_default=True, help="the first key's project")
def db_init(with_roles: bool, project: str) -> None:
    url = database_url()
    upgrade_schema(url)
    if with_roles:
        apply_roles(url)
    with psycopg.connect(url) as conn:
        if keys.project_has_active_key(conn, project):
            click.echo(
                f"API keys: project {project!r} has one already; another: bagula keys create --project NAME", err=True
            )
            return
        new = keys.create_key(conn, project)
    click.echo(f"first API key for project {project!r} (shown once):", err=True)
    click.echo(new.secret)
