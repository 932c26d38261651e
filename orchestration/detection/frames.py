"""The session frame detection judges, read from the dbt model ``marts.detection_sessions``
(the columns of ``ml.schema.SESSION_SCHEMA``), and which sessions a build added."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import polars as pl
import psycopg
from psycopg.types.string import TextLoader

from ml.schema import SESSION_SCHEMA, conform

FRAME_COLUMNS = ", ".join(SESSION_SCHEMA)


def _text_ids(conn: psycopg.Connection) -> psycopg.Cursor:
    """A cursor that loads uuids as text, as the frame keeps ids."""
    cur = conn.cursor()
    cur.adapters.register_loader("uuid", TextLoader)
    return cur


def session_frame(conn: psycopg.Connection, project_id: uuid.UUID | str, start: datetime, end: datetime,
                  agent_name: str | None = None) -> pl.DataFrame:
    """Sessions of the project (or of one agent) that started in [start, end), in start order."""
    rows = _text_ids(conn).execute(
        f"""
        select {FRAME_COLUMNS} from marts.detection_sessions
        where project_id = %(project)s and started_at >= %(start)s and started_at < %(end)s
          and (%(agent)s::text is null or agent_name = %(agent)s)
        order by started_at, session_id
        """,
        {"project": project_id, "start": start, "end": end, "agent": agent_name},
    ).fetchall()
    return conform(pl.DataFrame(rows, schema=list(SESSION_SCHEMA), orient="row", infer_schema_length=None))


def built_between(conn: psycopg.Connection, project_id: str, start: datetime, end: datetime,
                  after: int, upto: int) -> pl.DataFrame:
    """Ids (column session_id) of the project's sessions started in [start, end) that the
    marts wrote with a watermark in (after, upto]: what a build added."""
    rows = _text_ids(conn).execute(
        """
        select session_id from marts.fct_sessions
        where project_id = %s and started_at >= %s and started_at < %s and watermark > %s and watermark <= %s
        """,
        (project_id, start, end, after, upto),
    ).fetchall()
    return pl.DataFrame(rows, schema={"session_id": pl.Utf8}, orient="row")


def marts_ready(conn: psycopg.Connection) -> bool:
    return conn.execute("select to_regclass('marts.detection_sessions') is not null").fetchone()[0]


def projects_with_sessions(conn: psycopg.Connection, start: datetime, end: datetime,
                           after: int | None = None, upto: int | None = None) -> list[str]:
    """Projects with sessions started in [start, end) (only those a build wrote in (after, upto])."""
    rows = conn.execute(
        "select distinct project_id::text from marts.fct_sessions where started_at >= %s and started_at < %s"
        " and (%s::bigint is null or watermark > %s::bigint) and (%s::bigint is null or watermark <= %s::bigint)",
        (start, end, after, after, upto, upto),
    ).fetchall()
    return sorted(r[0] for r in rows)


def utc(moment: datetime) -> datetime:
    """psycopg gives the session's zone (e.g. Etc/UTC); polars compares zones strictly."""
    return moment.astimezone(timezone.utc)


def first_sessions_without_baseline(conn: psycopg.Connection, project_id: str,
                                    agents: list[str]) -> dict[str, datetime]:
    """When each of ``agents`` that has no automatic baseline yet started its first session."""
    rows = conn.execute(
        """
        select agent_name,
               (select min(started_at) from marts.fct_sessions s
                where s.project_id = %(project)s and s.agent_name = agents.agent_name)
        from unnest(%(agents)s::text[]) as agents (agent_name)
        where not exists (select 1 from baselines b where b.project_id = %(project)s
                          and b.agent_name = agents.agent_name and b.kind = 'auto')
        """,
        {"project": project_id, "agents": agents},
    ).fetchall()
    return {agent: utc(first) for agent, first in rows if first is not None}
