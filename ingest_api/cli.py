"""The ``bagula`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click
import psycopg
import uvicorn

from ingest_api import db
from ingest_api.localdb import LocalDbError, LocalPostgres
from ingest_api.settings import Settings, get_settings
from ingest_api.store import keys

DEFAULT_PROJECT = "default"


def _database_url() -> str:
    try:
        return get_settings().require_database_url()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


def _upgrade(url: str, settings: Settings) -> None:
    db.upgrade(url, settings.timescaledb)
    tables = db.hypertables(url)
    click.echo(f"schema at revision {db.current_revision(url)}", err=True)
    if tables:
        click.echo(f"timescaledb: hypertables {', '.join(tables)}", err=True)
    else:
        click.echo("timescaledb: not installed; plain PostgreSQL tables (no hypertables)", err=True)


@click.group(help="Bagula: observability for AI agents in production.")
def main() -> None:
    pass


@main.group(name="db", help="Database schema.")
def db_group() -> None:
    pass


@db_group.command("upgrade", help="Apply pending migrations (idempotent).")
def db_upgrade() -> None:
    _upgrade(_database_url(), get_settings())


@main.group(name="keys", help="API keys; each key is bound to one project.")
def keys_group() -> None:
    pass


@keys_group.command("create", help="Create a key (the project too, if new). The key is printed once, as the last line.")
@click.option("--project", required=True, help="project name")
def keys_create(project: str) -> None:
    with psycopg.connect(_database_url()) as conn:
        new = keys.create_key(conn, project)
    click.echo(f"created key {new.key_id} for project {new.project_name!r}; it is shown only once:", err=True)
    click.echo(new.secret)


@keys_group.command("revoke", help="Revoke a key, given its id or the key itself.")
@click.argument("key")
def keys_revoke(key: str) -> None:
    with psycopg.connect(_database_url()) as conn:
        count = keys.revoke_key(conn, key)
    if not count:
        raise click.ClickException("no active key matches")
    click.echo(f"revoked {count} key(s)")


@keys_group.command("list", help="List keys (prefixes only; keys themselves are not stored).")
@click.option("--project", default=None)
def keys_list(project: str | None) -> None:
    with psycopg.connect(_database_url()) as conn:
        for key_id, name, prefix, created, revoked in keys.list_keys(conn, project):
            state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
            click.echo(f"{key_id}  {name}  {prefix}…  created {created:%Y-%m-%d %H:%M}  {state}")


def _serve_api(host: str, port: int, workers: int) -> None:
    uvicorn.run(
        "ingest_api.app:create_app", factory=True, host=host, port=port, workers=workers,
        log_level="info", access_log=False,
    )


@main.command("api", help="Serve the HTTP API.")
@click.option("--host", default=None, help="default: BAGULA_API_HOST or 127.0.0.1")
@click.option("--port", type=int, default=None, help="default: BAGULA_API_PORT or 8000")
@click.option("--workers", type=int, default=None, help="server processes; default: BAGULA_API_WORKERS or 2")
def api(host: str | None, port: int | None, workers: int | None) -> None:
    settings = get_settings()
    _database_url()
    _serve_api(host or settings.api_host, port or settings.api_port, workers or settings.api_workers)


@main.command("run", help="Start the platform: database (project-local unless BAGULA_DATABASE_URL is set), schema, first API key, API.")
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--workers", type=int, default=None)
def run(host: str | None, port: int | None, workers: int | None) -> None:
    settings = get_settings()
    local = None
    url = settings.database_url
    if not url:
        local = LocalPostgres(settings.data_dir / "postgres", settings.local_db_port)
        try:
            url = local.ensure()
        except LocalDbError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"project-local PostgreSQL in {local.data_dir} on port {local.port}", err=True)
        # API worker processes read their settings from the environment.
        os.environ["BAGULA_DATABASE_URL"] = url
        get_settings.cache_clear()
    _upgrade(url, settings)

    with psycopg.connect(url) as conn:
        first_key = None if keys.project_has_active_key(conn, DEFAULT_PROJECT) else keys.create_key(conn, DEFAULT_PROJECT)
    host, port = host or settings.api_host, port or settings.api_port
    base = f"http://{host}:{port}"
    lines = [
        "",
        "Bagula is starting:",
        f"  API              {base}",
        f"  API docs         {base}/docs",
        f"  database         {url.split('@')[-1]}" + (" (project-local)" if local else ""),
    ]
    if first_key:
        lines.append(f"  API key (project {DEFAULT_PROJECT!r}, shown once): {first_key.secret}")
    else:
        lines.append(f"  API keys: project {DEFAULT_PROJECT!r} has one already; another: bagula keys create --project NAME")
    click.echo("\n".join(lines) + "\n")
    sys.stdout.flush()
    api_command = [
        sys.executable, "-m", "ingest_api.cli", "api", "--host", host, "--port", str(port),
        "--workers", str(workers or settings.api_workers),
    ]
    try:
        supervise([api_command])
    finally:
        if local is not None:
            click.echo("stopping the project-local PostgreSQL", err=True)
            local.stop()


def supervise(commands: list[list[str]]) -> None:
    """Run the platform's services until one exits or we are told to stop; then stop them all."""
    children = [subprocess.Popen(cmd) for cmd in commands]

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    main()
