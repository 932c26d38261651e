"""`bagula keys ...`: API keys, each bound to one project."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import click
import psycopg

from bagula.cli.common import aware, database_url, parse_duration
from bagula.settings import get_platform_settings, get_superset_settings
from bagula.superset import Superset, SupersetError, superset_ready, sync_projects
from ingest_api.store import keys


@click.group(name="keys", help="API keys; each key is bound to one project.")
def keys_group() -> None:
    pass


@keys_group.command("create", help="""Create a key (the project too, if new). The key is printed once, as the
last line. Scopes: ingest (send sessions and spans: what agents get), read (every GET: dashboards,
scripts), admin (resolve, baselines, incidents, alert routes, erasure, retention, redaction);
repeat --scope for several; without it the key has all three.""")
@click.option("--project", required=True, help="project name")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(keys.SCOPES),
              help="what the key may do (repeatable; default: all three)")
@click.option("--expires", default=None, help="expiry: an ISO 8601 time with a zone, or a duration from now (90d)")
def keys_create(project: str, scopes: tuple[str, ...], expires: str | None) -> None:
    expires_at = _expiry(expires) if expires else None
    url = database_url()
    with psycopg.connect(url) as conn:
        is_new = keys.project_id(conn, project) is None
        new = keys.create_key(conn, project, scopes or keys.SCOPES, expires_at)
    if is_new:
        _superset_in_step(url, project)
    until = f", until {expires_at:%Y-%m-%d %H:%M %Z}" if expires_at else ""
    click.echo(f"created key {new.key_id} for project {new.project_name!r} (scopes {', '.join(scopes or keys.SCOPES)}"
               f"{until}); it is shown only once:", err=True)
    click.echo(new.secret)


def _expiry(text: str) -> datetime:
    if text[:1].isdigit() and text[-1:] in "smhd" and "-" not in text:
        return datetime.now(timezone.utc) + timedelta(seconds=parse_duration(text))
    return aware(text, "--expires")


def _superset_in_step(url: str, project: str) -> None:
    """A new project gets its Superset role (which sees only its rows) where Superset runs here."""
    superset = Superset.of(get_platform_settings(), get_superset_settings())
    if not superset_ready(superset):
        click.echo(f"new project {project!r}: where Superset runs, `bagula superset sync-projects` "
                   "gives it its role", err=True)
        return
    try:
        for line in sync_projects(superset, url):
            click.echo(line.strip(), err=True)
    except SupersetError as exc:
        click.echo(f"new project {project!r}: Superset's project roles not updated ({str(exc).splitlines()[0]}); "
                   "run `bagula superset sync-projects`", err=True)


@keys_group.command("revoke", help="Revoke a key, given its id or the key itself.")
@click.argument("key")
def keys_revoke(key: str) -> None:
    with psycopg.connect(database_url()) as conn:
        count = keys.revoke_key(conn, key)
    if not count:
        raise click.ClickException("no active key matches")
    click.echo(f"revoked {count} key(s)")


@keys_group.command("list", help="List keys (prefixes only; keys themselves are not stored), with their scopes, "
                                  "expiry and last use (to within a minute).")
@click.option("--project", default=None)
def keys_list(project: str | None) -> None:
    now = datetime.now(timezone.utc)
    with psycopg.connect(database_url()) as conn:
        for key_id, name, prefix, created, revoked, scopes, expires, used in keys.list_keys(conn, project):
            state = (f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked
                     else f"expired {expires:%Y-%m-%d %H:%M}" if expires and expires <= now else "active")
            until = f"  expires {expires:%Y-%m-%d %H:%M}" if expires and expires > now else ""
            last = f"last used {used:%Y-%m-%d %H:%M}" if used else "never used"
            click.echo(f"{key_id}  {name}  {prefix}…  {','.join(scopes)}  created {created:%Y-%m-%d %H:%M}  "
                       f"{state}{until}  {last}")
