"""Reads and user actions on detection's output (verdicts, resolving them), always
scoped to the caller's project."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

from ingest_api.paging import encode_cursor

Kind = Literal["anomalies", "regressions"]

# Per kind: id column, and the columns an item shows beyond the common ones.
KINDS: dict[str, tuple[str, list[str]]] = {
    "anomalies": ("anomaly_id", ["anomaly_type", "details", "model_version"]),
    "regressions": ("regression_id", ["differences", "baseline_id"]),
}
COMMON = ["session_id", "agent_name", "severity", "score", "explanation", "session_started_at", "detected_at",
          "resolved", "resolved_at"]


@dataclass
class VerdictFilter:
    anomaly_type: str | None = None
    severity: str | None = None
    resolved: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, uuid.UUID] | None = None
    limit: int = 50


def _item(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    id_column, _ = KINDS[kind]
    item = dict(row)
    item["id"] = str(item.pop(id_column))
    item["session_id"] = str(item["session_id"])
    if kind == "anomalies":
        item["type"] = item.pop("anomaly_type")
    else:
        item["baseline_id"] = str(item["baseline_id"]) if item["baseline_id"] else None
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
    # Committed before the answer is sent: a client that reads its write back sees it.
    async with conn.transaction(), conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
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
