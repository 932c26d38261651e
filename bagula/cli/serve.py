"""`bagula api` and `bagula run`: serving the API, and the whole platform at once."""

from __future__ import annotations

import os
import sys

import click
import psycopg
import uvicorn

from bagula.cli.common import database_url
from bagula.cli.pipeline import dagster_env
from bagula.cli.schema import upgrade_schema
from bagula.cli.superset import local_superset
from bagula.localdb import LocalDbError, LocalPostgres
from bagula.observability import MULTIPROCESS_ENV, log_config, serve_metrics
from bagula.serving import serve
from bagula.settings import get_platform_settings
from bagula.superset import SupersetError, prepare_superset, superset_serve_command
from bagula.supervisor import Service, supervise
from ingest_api.store import keys
from orchestration import instance

DEFAULT_PROJECT = "default"


@click.command("api", help="Serve the HTTP API.")
@click.option("--host", default=None, help="default: BAGULA_API_HOST or 127.0.0.1")
@click.option("--port", type=int, default=None, help="default: BAGULA_API_PORT or 8000")
@click.option("--workers", type=int, default=None, help="server processes; default: BAGULA_API_WORKERS or 2")
def api(host: str | None, port: int | None, workers: int | None) -> None:
    settings = get_platform_settings()
    url = database_url()
    if settings.metrics_port:
        # Workers count into this directory; this process serves their sum.
        directory = serve_metrics(settings.metrics_host, settings.metrics_port, url)
        if directory:
            os.environ[MULTIPROCESS_ENV] = directory
    serve(uvicorn.Config(
        "ingest_api.app:create_app", factory=True, host=host or settings.api_host, port=port or settings.api_port,
        workers=workers or settings.api_workers, log_config=log_config(settings.log_format), access_log=False,
        # A worker still importing the app on a busy or CPU-limited machine (a container's
        # limit) answers the supervisor's ping late; uvicorn's 5 s would kill it, again and again.
        timeout_worker_healthcheck=60,
    ))


@click.command("run", help="Start the platform: database (project-local unless BAGULA_DATABASE_URL is set), "
                           "schema, first API key, API, Dagster and Superset.")
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--workers", type=int, default=None)
def run(host: str | None, port: int | None, workers: int | None) -> None:
    settings = get_platform_settings()
    local = None
    url = settings.database_url
    if not url:
        local = LocalPostgres(settings.data_dir / "postgres", settings.local_db_port)
        try:
            url = local.ensure()
        except LocalDbError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"project-local PostgreSQL in {local.data_dir} on port {local.port}", err=True)
    upgrade_schema(url)

    with psycopg.connect(url) as conn:
        first_key = None if keys.project_has_active_key(conn, DEFAULT_PROJECT) else keys.create_key(conn, DEFAULT_PROJECT)
    host, port = host or settings.api_host, port or settings.api_port
    base = f"http://{host}:{port}"
    lines = [
        "",
        "Bagula is starting:",
        f"  API              {base}",
        f"  API docs         {base}/docs",
        f"  Dagster          http://{host}:{settings.dagster_port}  (orchestrator of record: backfills, reruns, hourly dbt tests)",
        f"  database         {url.split('@')[-1]}" + (" (project-local)" if local else ""),
    ]
    if first_key:
        lines.append(f"  API key (project {DEFAULT_PROJECT!r}, shown once): {first_key.secret}")
    else:
        lines.append(f"  API keys: project {DEFAULT_PROJECT!r} has one already; another: bagula keys create --project NAME")
    superset = local_superset()
    try:
        lines += prepare_superset(superset, url)
        superset_argv, superset_env = superset_serve_command(superset, superset.settings.port)
    except SupersetError as exc:
        if local is not None:
            local.stop()
        raise click.ClickException(f"Superset: {exc}") from None
    click.echo("\n".join(lines) + "\n")
    sys.stdout.flush()
    # Every child reads the database URL from its environment (the API's worker processes too).
    env = {**os.environ, "BAGULA_DATABASE_URL": url}
    dagster = {**env, **dagster_env(url)}
    # Alerts link to this Superset unless told where users reach it.
    dagster.setdefault("BAGULA_SUPERSET_PUBLIC_URL", f"http://{host}:{superset.settings.port}")
    services = [
        Service("api", [sys.executable, "-m", "bagula", "api", "--host", host, "--port", str(port),
                        "--workers", str(workers or settings.api_workers)], env),
        # The live path builds the marts, judges and alerts every new batch within seconds;
        # Dagster's sensor stands aside while it keeps up and takes over if it stops.
        Service("live", [sys.executable, "-m", "bagula", "pipeline", "live"], dagster),
        Service("dagster-webserver", instance.webserver_command(host, settings.dagster_port), dagster),
        Service("dagster-daemon", instance.daemon_command(), dagster),
        # Superset's secrets go to its own process only.
        Service("superset", superset_argv, {**env, **superset_env}),
    ]
    try:
        supervise(services)
    finally:
        if local is not None:
            click.echo("stopping the project-local PostgreSQL", err=True)
            local.stop()
