"""Reads of incidents and what on-call engineers do to them (acknowledge, resolve by hand),
always scoped to the caller's project. Incidents are written by detection's grouping
(orchestration.detection.incidents); here only a hand's resolution, with its event and alert."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ingest_api.paging import encode_cursor
from ml.incidents import event_id

COLUMNS = """incident_id, agent_name, kind, status, first_seen, last_seen, opened_at, resolved_at, resolution,
             opened_severity, peak_severity, current_severity, affected_sessions, span_sessions, traffic_share,
             verdict_count, summary, example_session_ids, figures, acknowledged_at, acknowledged_by,
             resolved_by, updated_at"""
# Grouping's own states: pending (seen, not yet enough evidence to page anyone), open, resolved.
STATUSES = ("pending", "open", "resolved")


@dataclass
class IncidentFilter:
    agent_name: str | None = None
    status: str | None = None
    kind: str | None = None
    severity: str | None = None
    acknowledged: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, uuid.UUID] | None = None
    limit: int = 50


def _item(row: dict[str, Any]) -> dict[str, Any]:
    item = dict(row)
    for key in ("incident_id", "acknowledged_by", "resolved_by"):
        item[key] = str(item[key]) if item[key] is not None else None
    item["example_session_ids"] = [str(s) for s in item["example_session_ids"]]
    item["example_sessions"] = [{"session_id": s, "href": f"/v1/sessions/{s}"} for s in item["example_session_ids"]]
    return item


async def list_incidents(conn: psycopg.AsyncConnection, project_id: uuid.UUID,
                         f: IncidentFilter) -> tuple[list[dict], str | None]:
    """A page of incidents, most recently started first, and the cursor of the next page.
    ``since``/``until`` keep the incidents active at some moment of that range."""
    conditions = ["project_id = %(project)s", "status <> 'discarded'"]
    params: dict[str, Any] = {"project": project_id, "limit": f.limit + 1}
    for column, value in (("agent_name", f.agent_name), ("status", f.status), ("kind", f.kind),
                          ("peak_severity", f.severity)):
        if value is not None:
            conditions.append(f"{column} = %({column})s")
            params[column] = value
    if f.acknowledged is not None:
        conditions.append("acknowledged_at is " + ("not null" if f.acknowledged else "null"))
    if f.since is not None:
        conditions.append("last_seen >= %(since)s")
        params["since"] = f.since
    if f.until is not None:
        conditions.append("first_seen < %(until)s")
        params["until"] = f.until
    if f.after is not None:
        conditions.append("(first_seen, incident_id) < (%(after_time)s, %(after_id)s)")
        params["after_time"], params["after_id"] = f.after
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"select {COLUMNS} from incidents where {' and '.join(conditions)}"
            " order by first_seen desc, incident_id desc limit %(limit)s", params)
        rows = await cur.fetchall()
    next_cursor = None
    if len(rows) > f.limit:
        rows = rows[: f.limit]
        next_cursor = encode_cursor(rows[-1]["first_seen"], rows[-1]["incident_id"])
    return [_item(row) for row in rows], next_cursor


async def get_incident(conn: psycopg.AsyncConnection, project_id: uuid.UUID, incident_id: uuid.UUID) -> dict | None:
    """The incident with its events, oldest first (None: not this project's)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"select {COLUMNS} from incidents where project_id = %s and incident_id = %s"
                          " and status <> 'discarded'", (project_id, incident_id))
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            "select event_id, event, severity, at, summary, affected_sessions, traffic_share, created_at"
            " from incident_events where incident_id = %s order by at, created_at, event_id", (incident_id,))
        events = await cur.fetchall()
    item = _item(row)
    item["events"] = [{**e, "event_id": str(e["event_id"])} for e in events]
    return item


async def list_verdicts(conn: psycopg.AsyncConnection, project_id: uuid.UUID, incident_id: uuid.UUID,
                        after: tuple[datetime, uuid.UUID] | None, limit: int) -> tuple[list[dict], str | None]:
    """The incident's per-session verdicts, newest session first (the drill-down)."""
    params: dict[str, Any] = {"project": project_id, "incident": incident_id, "limit": limit + 1}
    position = ""
    if after is not None:
        position = "and (m.session_started_at, m.session_id) < (%(after_time)s, %(after_id)s)"
        params["after_time"], params["after_id"] = after
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            select m.session_id, m.agent_name, m.verdict_type, m.severity, m.session_started_at,
                   v.verdict_id, v.score, v.explanation
            from incident_members m
            cross join lateral (
                select a.anomaly_id as verdict_id, a.score, a.explanation from anomalies a
                where m.verdict_type <> 'regression' and a.project_id = m.project_id
                  and a.session_id = m.session_id and a.anomaly_type = m.verdict_type
                union all
                (select r.regression_id, r.score, r.explanation from regressions r
                 where m.verdict_type = 'regression' and r.project_id = m.project_id and r.session_id = m.session_id
                 order by r.detected_at desc limit 1)
            ) v
            where m.incident_id = %(incident)s and m.project_id = %(project)s {position}
            order by m.session_started_at desc, m.session_id desc, m.verdict_type
            limit %(limit)s
            """, params)
        rows = await cur.fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        # A session's verdicts never straddle pages: the page ends with the last whole session.
        last = rows[-1]["session_id"]
        while len(rows) > 1 and rows[-1]["session_id"] == last and rows[0]["session_id"] != last:
            rows.pop()
        next_cursor = encode_cursor(rows[-1]["session_started_at"], rows[-1]["session_id"])
    return [{**r, "session_id": str(r["session_id"]), "verdict_id": str(r["verdict_id"])} for r in rows], next_cursor


async def acknowledge(conn: psycopg.AsyncConnection, project_id: uuid.UUID, incident_id: uuid.UUID,
                      key_id: uuid.UUID) -> dict | None:
    """Acknowledged (the first acknowledgement stands); None: not this project's incident."""
    async with conn.transaction():
        found = (await conn.execute(
            "update incidents set acknowledged_at = coalesce(acknowledged_at, now()),"
            " acknowledged_by = coalesce(acknowledged_by, %s) where project_id = %s and incident_id = %s"
            " and status <> 'discarded' returning 1", (key_id, project_id, incident_id))).fetchone()
    return await get_incident(conn, project_id, incident_id) if found else None


class NotOpen(Exception):
    """Only an open incident can be resolved by hand (a pending one has paged nobody)."""


async def resolve(conn: psycopg.AsyncConnection, project_id: uuid.UUID, incident_id: uuid.UUID,
                  key_id: uuid.UUID) -> dict | None:
    """Resolved by hand now, with its ``resolved`` event and, when its opening was alerted, the
    alert of its resolution; resolving a resolved incident changes nothing. A later verdict of
    the same agent and kind starts a new incident. None: not this project's incident."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # The row lock orders this with detection's grouping, which locks the open incidents.
        await cur.execute("select incident_id, status, peak_severity from incidents where project_id = %s"
                          " and incident_id = %s and status <> 'discarded' for update", (project_id, incident_id))
        row = await cur.fetchone()
        if row is None:
            return None
        if row["status"] == "pending":
            raise NotOpen("the incident is still pending (not enough evidence yet to have paged anyone)")
        if row["status"] == "open":
            event = event_id(str(incident_id), "resolved", row["peak_severity"])
            await cur.execute(
                """
                with resolved as (
                    update incidents set status = 'resolved', resolution = 'hand', resolved_at = now(),
                                         resolved_by = %(key)s, state = null, updated_at = now()
                    where incident_id = %(incident)s
                    returning *
                ),
                event as (
                    insert into incident_events (event_id, incident_id, project_id, agent_name, kind, event,
                                                 severity, at, summary, affected_sessions, traffic_share,
                                                 example_session_ids)
                    select %(event)s, incident_id, project_id, agent_name, kind, 'resolved', peak_severity,
                           resolved_at, summary, affected_sessions, traffic_share, example_session_ids
                    from resolved
                    on conflict do nothing
                    returning event_id
                )
                select bagula_alert_incident_event(event_id, null) from event
                """, {"key": key_id, "incident": incident_id, "event": event})
    return await get_incident(conn, project_id, incident_id)
