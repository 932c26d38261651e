"""`bagula superset ...`: Superset dashboards over the marts."""

from __future__ import annotations

import os
from pathlib import Path

import click

from bagula.cli.common import database_url
from bagula.settings import get_platform_settings, get_superset_settings
from bagula.superset import (
    ASSETS_DIR,
    Superset,
    SupersetError,
    prepare_superset,
    run_bootstrap,
    superset_serve_command,
    sync_projects,
)


def local_superset() -> Superset:
    return Superset.of(get_platform_settings(), get_superset_settings())


@click.group(name="superset", help="Superset dashboards over the marts.")
def superset_group() -> None:
    pass


@superset_group.command("init", help="Upgrade Superset's metadata, create the admin and the read-only role, "
                                      "import the dashboards, give every project its role (idempotent).")
def init_command() -> None:
    url = database_url()
    try:
        lines = prepare_superset(local_superset(), url)
    except SupersetError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(lines))


@superset_group.command("serve", help="Serve Superset (after `bagula superset init`).")
@click.option("--port", type=int, default=None, help="default: BAGULA_SUPERSET_PORT or 8088")
def serve_command(port: int | None) -> None:
    superset = local_superset()
    port = port or superset.settings.port
    try:
        argv, env = superset_serve_command(superset, port)
    except SupersetError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Superset on http://{superset.settings.host}:{port}", err=True)
    os.execve(argv[0], argv, {**os.environ, **env})


@superset_group.command("export", help="Write the dashboards, charts and datasets as they are in Superset now "
                                        "to superset/assets (or DIR), to review and commit.")
@click.option("--to", "target", type=click.Path(file_okay=False, path_type=Path), default=None)
def export_command(target: Path | None) -> None:
    try:
        summary = run_bootstrap(local_superset(), "export", target or ASSETS_DIR, {})
    except SupersetError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {len(summary['files'])} files to {target or ASSETS_DIR}")


@superset_group.command("sync-projects", help="Give every project its Superset role, which sees that project's rows "
                                               "only (what init does for projects; `bagula keys create` runs it for "
                                               "a new project when Superset is set up here).")
def sync_projects_command() -> None:
    url = database_url()
    try:
        lines = sync_projects(local_superset(), url)
    except SupersetError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(lines))
