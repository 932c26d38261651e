"""`bagula erase ...`: the right to be forgotten from the command line (docs/privacy.md)."""

from __future__ import annotations

import asyncio
import getpass
import uuid

import click
import psycopg

from bagula.cli.common import aware, database_url
from ingest_api.store import erasure as store


def _erase(project: str, criteria: store.Criteria) -> None:
    async def run() -> store.Erasure:
        async with await psycopg.AsyncConnection.connect(database_url(), autocommit=True) as conn:
            cur = await conn.execute("select project_id from projects where name = %s", (project,))
            row = await cur.fetchone()
            if row is None:
                raise click.ClickException(f"no project named {project!r}")
            return await store.erase(conn, row[0], criteria, f"cli:{getpass.getuser()}")

    try:
        done = asyncio.run(run())
    except store.Busy:
        raise click.ClickException("a build of the marts holds the pipeline; nothing was erased: retry") from None
    click.echo(f"erasure {done.erasure_id}: {done.sessions} session(s) erased")
    for table, count in sorted(done.rows_deleted.items()):
        click.echo(f"  {table:<36} {count}")


@click.group(
    name="erase",
    help="""Erase sessions from every table the platform keeps (raw, marts, verdicts,
alerts, search index), with an audit row (`bagula erase log`). Idempotent; an erased session sent
again is counted as a duplicate and not stored.""",
)
def erase_group() -> None:
    pass


@erase_group.command("session", help="Erase one session.")
@click.option("--project", required=True)
@click.argument("session_id", type=click.UUID)
def erase_session(project: str, session_id: uuid.UUID) -> None:
    _erase(project, store.Criteria(session_id=session_id))


@erase_group.command("user", help="Erase every session of a userId.")
@click.option("--project", required=True)
@click.argument("user_id")
def erase_user(project: str, user_id: str) -> None:
    _erase(project, store.Criteria(user_id=user_id))


@erase_group.command("range", help="Erase an agent's sessions started in [--since, --until).")
@click.option("--project", required=True)
@click.option("--agent", required=True)
@click.option("--since", required=True, help="ISO 8601 with a zone")
@click.option("--until", required=True, help="ISO 8601 with a zone, exclusive")
def erase_range(project: str, agent: str, since: str, until: str) -> None:
    start, end = aware(since, "--since"), aware(until, "--until")
    if end <= start:
        raise click.BadParameter("must be after --since", param_hint="--until")
    _erase(project, store.Criteria(agent_name=agent, since=start, until=end))


@erase_group.command("log", help="The project's erasures (the audit trail), newest first.")
@click.option("--project", required=True)
def erase_log(project: str) -> None:
    async def run() -> list[store.Erasure]:
        async with await psycopg.AsyncConnection.connect(database_url(), autocommit=True) as conn:
            cur = await conn.execute("select project_id from projects where name = %s", (project,))
            row = await cur.fetchone()
            if row is None:
                raise click.ClickException(f"no project named {project!r}")
            return await store.list_erasures(conn, row[0])

    for e in asyncio.run(run()):
        click.echo(
            f"{e.requested_at:%Y-%m-%d %H:%M:%S}  {e.erasure_id}  by {e.requested_by}  {e.criteria}  "
            f"{e.sessions} session(s), {sum(e.rows_deleted.values())} row(s)"
        )
