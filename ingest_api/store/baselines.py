"""Agents' baselines as users see and pin them, always scoped to the caller's project.

Pinning summarises the agent's sessions in a time range from the marts' session frame
(``marts.detection_sessions``, the columns of ``ml.schema``) with ``ml.baseline``, the
same summary detection computes for the automatic baseline."""

from __future__ import annotations

import uuid
from datetime import datetime

import polars as pl
import psycopg
from psycopg.types.json import Jsonb

from ml.baseline import summarize
from ml.schema import SESSION_SCHEMA, conform

SELECT = """
    select baseline_id::text, kind, window_start, window_end, session_count, metrics, created_at, active
    from baselines where project_id = %s and agent_name = %s
"""
FIELDS = ("baseline_id", "kind", "window_start", "window_end", "session_count", "metrics", "created_at", "active")


class MartsMissing(Exception):
    """The marts have not been built yet."""


class EmptyWindow(Exception):
    """No session of the agent started in the window."""


class PinConflict(Exception):
    """Another pin of the same agent's baseline committed first."""


async def list_baselines(conn: psycopg.AsyncConnection, project_id: uuid.UUID, agent_name: str) -> list[dict]:
    """The agent's baselines, the active one first."""
    cur = await conn.execute(SELECT + " order by active desc, created_at desc", (project_id, agent_name))
    return [dict(zip(FIELDS, row, strict=True)) for row in await cur.fetchall()]


async def _window_frame(conn: psycopg.AsyncConnection, project_id: uuid.UUID, agent_name: str,
                        start: datetime, end: datetime) -> pl.DataFrame:
    cur = await conn.execute("select to_regclass('marts.detection_sessions') is not null")
    if not (await cur.fetchone())[0]:
        raise MartsMissing
    cur = await conn.execute(
        f"""
        select {", ".join(f"{name}::text" if name.endswith("_id") else name for name in SESSION_SCHEMA)}
        from marts.detection_sessions
        where project_id = %s and agent_name = %s and started_at >= %s and started_at < %s
        order by started_at, session_id
        """,
        (project_id, agent_name, start, end),
    )
    rows = await cur.fetchall()
    return conform(pl.DataFrame(rows, schema=list(SESSION_SCHEMA), orient="row", infer_schema_length=None))


async def pin(conn: psycopg.AsyncConnection, project_id: uuid.UUID, agent_name: str,
              start: datetime, end: datetime) -> dict:
    """Make the agent's sessions in [start, end) its baseline, from now on."""
    window = await _window_frame(conn, project_id, agent_name, start, end)
    if window.is_empty():
        raise EmptyWindow
    try:
        return await _activate(conn, project_id, agent_name, start, end, window)
    except psycopg.errors.UniqueViolation:
        # Two pins at once: both deactivated the old baseline, the second insert meets the first's.
        raise PinConflict from None


async def _activate(conn: psycopg.AsyncConnection, project_id: uuid.UUID, agent_name: str, start: datetime,
                    end: datetime, window: pl.DataFrame) -> dict:
    async with conn.transaction():
        await conn.execute(
            "update baselines set active = false where project_id = %s and agent_name = %s and active",
            (project_id, agent_name))
        cur = await conn.execute(
            """
            insert into baselines (project_id, agent_name, kind, window_start, window_end, session_count,
                                   metrics, active)
            values (%s, %s, 'pinned', %s, %s, %s, %s, true)
            returning baseline_id
            """,
            (project_id, agent_name, start, end, window.height, Jsonb(summarize(window))),
        )
        baseline_id = (await cur.fetchone())[0]
        cur = await conn.execute(SELECT + " and baseline_id = %s", (project_id, agent_name, baseline_id))
        return dict(zip(FIELDS, await cur.fetchone(), strict=True))
