"""`bagula baseline ...`: per-agent baselines that regressions are judged against."""

from __future__ import annotations

import asyncio
import uuid

import click
import psycopg

from bagula.cli.common import aware, database_url
from ingest_api.store import baselines, keys


@click.group(name="baseline", help="Per-agent baselines that regressions are judged against.")
def baseline_group() -> None:
    pass


def _project(url: str, name: str) -> uuid.UUID:
    with psycopg.connect(url) as conn:
        found = keys.project_id(conn, name)
    if found is None:
        raise click.ClickException(f"no project named {name!r}")
    return found


async def _with_connection(url: str, work):
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await work(conn)


@baseline_group.command("pin", help="Pin an agent's baseline to its sessions in [--from, --to).")
@click.option("--project", required=True)
@click.option("--agent", required=True)
@click.option("--from", "start_text", required=True, help="ISO 8601, e.g. 2026-11-20T00:00:00Z")
@click.option("--to", "end_text", required=True)
def baseline_pin(project: str, agent: str, start_text: str, end_text: str) -> None:
    start, end = aware(start_text, "--from"), aware(end_text, "--to")
    if end <= start:
        raise click.BadParameter("--to must be after --from")
    url = database_url()
    project_id = _project(url, project)
    try:
        pinned = asyncio.run(_with_connection(url, lambda conn: baselines.pin(conn, project_id, agent, start, end)))
    except baselines.MartsMissing:
        raise click.ClickException("the marts have not been built yet (bagula pipeline run)") from None
    except baselines.EmptyWindow:
        raise click.ClickException(f"no session of {agent!r} started in that window") from None
    click.echo(f"pinned baseline {pinned['baseline_id']}: {pinned['session_count']} sessions, "
               f"{pinned['window_start'].isoformat()} .. {pinned['window_end'].isoformat()}")


@baseline_group.command("show", help="An agent's baselines (the active one first).")
@click.option("--project", required=True)
@click.option("--agent", required=True)
def baseline_show(project: str, agent: str) -> None:
    url = database_url()
    project_id = _project(url, project)
    found = asyncio.run(_with_connection(url, lambda conn: baselines.list_baselines(conn, project_id, agent)))
    if not found:
        click.echo("no baseline yet: the first stable window is found once enough sessions are in")
    for b in found:
        click.echo(f"{b['baseline_id']}  {b['kind']:<6} {'active' if b['active'] else 'inactive':<8} "
                   f"{b['window_start']:%Y-%m-%d %H:%M} .. {b['window_end']:%Y-%m-%d %H:%M}  "
                   f"{b['session_count']} sessions")
