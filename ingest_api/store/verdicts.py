"""Reads and user actions on detection's output: verdicts, resolving them, baselines.
Always scoped to the caller's project."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from ingest_api.store.detection import SESSION_FRAME_SQL, frame_from_rows
from ingest_api.store.sessions import encode_cursor
from ml.baseline import summarize

Kind = Literal["anomalies", "regressions"]

# Per kind: id column, and the columns an item shows beyond the common ones.
KINDS: dict[str, tuple[str, list[str]]] = {
    "anomalies": ("anomaly_id", ["anomaly_type", "details", "model_version"]),
    "regressions": ("regression_id", ["differences", "baseline_id"]),
}
COMMON = ["session_id", "agent_name", "severity", "score", "explanation", "session_started_at", "detected_at",
          "resolved", "resolved_at"]


class MartsMissing(Exception):
    """The marts have not been built yet."""


@dataclass
class VerdictFilter:
    anomaly_type: str | None = None
    severity: str | None = None
    resolved: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, uuid.UUID] | None = None
    limit: int = 50


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _item(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    id_column, _ = KINDS[kind]
    item = {
        "id": str(row[id_column]),
        "session_id": str(row["session_id"]),
        "agent_name": row["agent_name"],
        "type": row.get("anomaly_type", "regression"),
        "severity": row["severity"],
        "score": row["score"],
        "explanation": row["explanation"],
        "session_started_at": _iso(row["session_started_at"]),
        "detected_at": _iso(row["detected_at"]),
        "resolved": row["resolved"],
        "resolved_at": _iso(row["resolved_at"]),
    }
    if kind == "anomalies":
        item.update(details=row["details"], model_version=row["model_version"])
    else:
        item.update(differences=row["differences"],
                    baseline_id=str(row["baseline_id"]) if row["baseline_id"] else None)
    return item


async def list_verdicts(conn: psycopg.AsyncConnection, kind: Kind, project_id: uuid.UUID, agent_name: str,
                        f: VerdictFilter) -> tuple[list[dict], str | None]:
    """A page of verdicts, newest session first, and the cursor of the next page."""
    id_column, extra = KINDS[kind]
    conditions = ["project_id = %(project)s", "agent_name = %(agent)s"]
    params: dict[str, Any] = {"project": project_id, "agent": agent_name, "limit": f.limit + 1}
    if f.anomaly_type is not None and kind == "anomalies":
        conditions.append("anomaly_type = %(type)s")
        params["type"] = f.anomaly_type
    if f.severity is not None:
        conditions.append("severity = %(severity)s")
        params["severity"] = f.severity
    if f.resolved is not None:
        conditions.append("resolved = %(resolved)s")
        params["resolved"] = f.resolved
    if f.since is not None:
        conditions.append("session_started_at >= %(since)s")
        params["since"] = f.since
    if f.until is not None:
        conditions.append("session_started_at < %(until)s")
        params["until"] = f.until
    if f.after is not None:
        conditions.append(f"(session_started_at, {id_column}) < (%(after_time)s, %(after_id)s)")
        params["after_time"], params["after_id"] = f.after
    columns = ", ".join([id_column, *COMMON, *extra])
    async with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        await cur.execute(
            f"""
            select {columns} from {kind}
            where {" and ".join(conditions)}
            order by session_started_at desc, {id_column} desc
            limit %(limit)s
            """,
            params,
        )
        rows = await cur.fetchall()
    next_cursor = None
    if len(rows) > f.limit:
        rows = rows[: f.limit]
        next_cursor = encode_cursor(rows[-1]["session_started_at"], rows[-1][id_column])
    return [_item(kind, row) for row in rows], next_cursor


async def set_resolved(conn: psycopg.AsyncConnection, kind: Kind, project_id: uuid.UUID, agent_name: str,
                       verdict_id: uuid.UUID, resolved: bool) -> dict | None:
    id_column, extra = KINDS[kind]
    async with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        await cur.execute(
            f"""
            update {kind}
            set resolved = %(resolved)s,
                resolved_at = case when %(resolved)s then coalesce(resolved_at, now()) end
            where project_id = %(project)s and agent_name = %(agent)s and {id_column} = %(id)s
            returning {", ".join([id_column, *COMMON, *extra])}
            """,
            {"resolved": resolved, "project": project_id, "agent": agent_name, "id": verdict_id},
        )
        row = await cur.fetchone()
    return _item(kind, row) if row else None


# ------------------------------------------------------------------ baselines

BASELINE_SELECT = """
    select baseline_id, kind, window_start, window_end, session_count, metrics, created_at, active
    from baselines where project_id = %s and agent_name = %s
"""


def _baseline(row: tuple) -> dict:
    baseline_id, kind, start, end, count, metrics, created, active = row
    return {"baseline_id": str(baseline_id), "kind": kind, "window_start": _iso(start), "window_end": _iso(end),
            "session_count": count, "metrics": metrics, "created_at": _iso(created), "active": active}


async def baselines(conn: psycopg.AsyncConnection, project_id: uuid.UUID, agent_name: str) -> list[dict]:
    """The agent's baselines, the active one first."""
    cur = await conn.execute(BASELINE_SELECT + " order by active desc, created_at desc", (project_id, agent_name))
    return [_baseline(row) for row in await cur.fetchall()]


class EmptyWindow(Exception):
    """No session of the agent started in the window."""


async def pin_baseline(conn: psycopg.AsyncConnection, project_id: uuid.UUID, agent_name: str,
                       start: datetime, end: datetime) -> dict:
    """Make the agent's sessions in [start, end) its baseline, from now on."""
    cur = await conn.execute("select to_regclass('marts.fct_sessions') is not null")
    if not (await cur.fetchone())[0]:
        raise MartsMissing
    cur = await conn.execute(SESSION_FRAME_SQL, {"project": project_id, "start": start, "end": end,
                                                 "agent": agent_name})
    window = frame_from_rows(await cur.fetchall())
    if window.is_empty():
        raise EmptyWindow
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
            (project_id, agent_name, start, end, window.height, Jsonb(summarize(window.drop("ingest_batch")))),
        )
        baseline_id = (await cur.fetchone())[0]
        cur = await conn.execute(BASELINE_SELECT + " and baseline_id = %s", (project_id, agent_name, baseline_id))
        return _baseline(await cur.fetchone())
