"""`bagula keys ...`: API keys, each bound to one project."""

from __future__ import annotations

import click
import psycopg

from bagula.cli.common import database_url
from ingest_api.store import keys


@click.group(name="keys", help="API keys; each key is bound to one project.")
def keys_group() -> None:
    pass


@keys_group.command("create", help="Create a key (the project too, if new). The key is printed once, as the last line.")
@click.option("--project", required=True, help="project name")
def keys_create(project: str) -> None:
    with psycopg.connect(database_url()) as conn:
        new = keys.create_key(conn, project)
    click.echo(f"created key {new.key_id} for project {new.project_name!r}; it is shown only once:", err=True)
    click.echo(new.secret)


@keys_group.command("revoke", help="Revoke a key, given its id or the key itself.")
@click.argument("key")
def keys_revoke(key: str) -> None:
    with psycopg.connect(database_url()) as conn:
        count = keys.revoke_key(conn, key)
    if not count:
        raise click.ClickException("no active key matches")
    click.echo(f"revoked {count} key(s)")


@keys_group.command("list", help="List keys (prefixes only; keys themselves are not stored).")
@click.option("--project", default=None)
def keys_list(project: str | None) -> None:
    with psycopg.connect(database_url()) as conn:
        for key_id, name, prefix, created, revoked in keys.list_keys(conn, project):
            state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
            click.echo(f"{key_id}  {name}  {prefix}…  created {created:%Y-%m-%d %H:%M}  {state}")
