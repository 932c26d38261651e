"""Incidents: the verdicts of one project, agent and kind grouped by ``ml.incidents``, kept in
the database, with an alert per event worth one.

Grouping is fed exactly once, in one transaction per project: the verdicts not grouped yet
(``grouped_at`` is null) and the project's sessions the marts wrote since the last grouping
(``pipeline_watermarks`` name ``incidents:<project>``), together with the project's pending and
open incidents; the updated incidents, their new members and events, the events' alerts
(``bagula_alert_incident_event()``: openings and escalations from the route's minimum severity
on, resolutions where the incident paged), the verdicts' ``grouped_at`` and the watermark are
written before it commits. A run that fails
anywhere before leaves everything to the next run; one that fails after has nothing left to do.
Event ids are deterministic, so each event, and each alert, exists once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import polars as pl
import psycopg
from psycopg.types.json import Jsonb

from ml import incidents as grouping
from ml.schema import UTC_MICROS
from ml.verdicts import REGRESSION

INCIDENT_COLUMNS = [c for c in grouping.INCIDENT_SCHEMA if c not in ("figures", "state", "example_session_ids")]
# Where a project's alerts go when it has no route of its own (alerts.destination).
DEFAULT_DESTINATION = "default"


@dataclass
class GroupingSummary:
    incidents_opened: int = 0
    incidents_resolved: int = 0
    events: int = 0
    alerts: int = 0
    verdicts_grouped: int = 0
    touched: list[str] = field(default_factory=list)


def _watermark_name(project_id: str) -> str:
    return f"incidents:{project_id}"


def _frame(rows: list[tuple], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=list(schema), orient="row", infer_schema_length=None).cast(schema)


def _sessions(conn: psycopg.Connection, project_id: str, after: int, upto: int) -> pl.DataFrame:
    rows = conn.execute(
        "select project_id::text, session_id::text, agent_name, started_at from marts.fct_sessions"
        " where project_id = %s and watermark > %s and watermark <= %s order by started_at, session_id",
        (project_id, after, upto)).fetchall()
    return _frame(rows, {"project_id": pl.Utf8(), "session_id": pl.Utf8(), "agent_name": pl.Utf8(),
                         "started_at": UTC_MICROS})


def _sessions_of(conn: psycopg.Connection, project_id: str, session_ids: list[str]) -> pl.DataFrame:
    rows = conn.execute(
        "select project_id::text, session_id::text, agent_name, started_at from marts.fct_sessions"
        " where project_id = %s and session_id = any(%s::uuid[])", (project_id, session_ids)).fetchall()
    return _frame(rows, {"project_id": pl.Utf8(), "session_id": pl.Utf8(), "agent_name": pl.Utf8(),
                         "started_at": UTC_MICROS})


def _ungrouped(conn: psycopg.Connection, project_id: str) -> pl.DataFrame:
    rows = conn.execute(
        """
        select project_id::text, session_id::text, agent_name, session_started_at, anomaly_type, severity, score,
               details::text
        from anomalies where project_id = %(project)s and grouped_at is null and session_started_at is not null
        union all
        select project_id::text, session_id::text, agent_name, session_started_at, 'regression', severity, score,
               differences::text
        from regressions where project_id = %(project)s and grouped_at is null and session_started_at is not null
        """, {"project": project_id}).fetchall()
    return _frame(rows, grouping.VERDICT_SCHEMA)


def _active(conn: psycopg.Connection, project_id: str) -> pl.DataFrame:
    columns = ", ".join(f"{c}::text" if c == "incident_id" or c == "project_id" else c for c in INCIDENT_COLUMNS)
    rows = conn.execute(
        f"select {columns}, example_session_ids::text[], figures::text, state::text from incidents"
        " where project_id = %s and status in ('pending', 'open') for update", (project_id,)).fetchall()
    return _frame(rows, {**{c: grouping.INCIDENT_SCHEMA[c] for c in INCIDENT_COLUMNS},
                         "example_session_ids": grouping.INCIDENT_SCHEMA["example_session_ids"],
                         "figures": pl.Utf8(), "state": pl.Utf8()}).select(list(grouping.INCIDENT_SCHEMA))


def _mark_grouped(conn: psycopg.Connection, project_id: str, verdicts: pl.DataFrame) -> None:
    """Exactly the verdicts this grouping read (not ones written since)."""
    anomalies = verdicts.filter(pl.col("verdict_type") != REGRESSION)
    regressions = verdicts.filter(pl.col("verdict_type") == REGRESSION)
    conn.execute(
        "update anomalies a set grouped_at = now() from unnest(%s::uuid[], %s::text[]) as g (session_id, kind)"
        " where a.project_id = %s and a.session_id = g.session_id and a.anomaly_type = g.kind",
        (anomalies.get_column("session_id").to_list(), anomalies.get_column("verdict_type").to_list(), project_id))
    conn.execute(
        "update regressions set grouped_at = now() where project_id = %s and grouped_at is null"
        " and session_id = any(%s::uuid[])", (project_id, regressions.get_column("session_id").to_list()))


UPSERT_SQL = f"""
    insert into incidents ({", ".join(grouping.INCIDENT_SCHEMA)})
    values ({", ".join(f"%({c})s" for c in grouping.INCIDENT_SCHEMA)})
    on conflict (incident_id) do update set
        {", ".join(f"{c} = excluded.{c}" for c in grouping.INCIDENT_SCHEMA if c not in ("incident_id", "project_id"))},
        updated_at = now()
"""


def _json_or_none(text: str | None) -> Jsonb | None:
    return None if text is None else Jsonb(json.loads(text))


def _store(conn: psycopg.Connection, result: grouping.IncidentUpdate, default_min_severity: str) -> tuple:
    """Write the update; returns (opened, resolved, new events, new alerts)."""
    kept = result.incidents.filter(pl.col("status") != "discarded")
    gone = result.incidents.filter(pl.col("status") == "discarded").get_column("incident_id").to_list()
    if gone:
        conn.execute("delete from incidents where incident_id = any(%s::uuid[])", (gone,))
    for row in kept.iter_rows(named=True):
        conn.execute(UPSERT_SQL, {**row, "figures": _json_or_none(row["figures"]),
                                  "state": _json_or_none(row["state"])})
    members = result.members.join(kept.select("incident_id"), on="incident_id", how="semi")
    if not members.is_empty():
        with conn.cursor() as cur:
            cur.executemany(
                "insert into incident_members (incident_id, project_id, agent_name, session_id, verdict_type,"
                " session_started_at, severity) values (%s, %s, %s, %s, %s, %s, %s) on conflict do nothing",
                members.select(list(grouping.MEMBER_SCHEMA)).rows())
    new_events = alerts = 0
    for event in result.events.join(kept.select("incident_id"), on="incident_id", how="semi").iter_rows(named=True):
        inserted = conn.execute(
            "insert into incident_events (event_id, incident_id, project_id, agent_name, kind, event, severity, at,"
            " summary, affected_sessions, traffic_share, example_session_ids) values (%(event_id)s, %(incident_id)s,"
            " %(project_id)s, %(agent_name)s, %(kind)s, %(event)s, %(severity)s, %(at)s, %(summary)s,"
            " %(affected_sessions)s, %(traffic_share)s, %(example_session_ids)s::uuid[]) on conflict do nothing"
            " returning 1", event).fetchone()
        if inserted is None:
            continue
        new_events += 1
        # Who is paged for it: the database's one rule (migration 0006a), shared with the API.
        alerts += conn.execute("select bagula_alert_incident_event(%s, %s)",
                               (event["event_id"], default_min_severity)).fetchone()[0]
    opened = result.events.filter(pl.col("event") == "opened").height
    resolved = result.events.filter(pl.col("event") == "resolved").height
    return opened, resolved, new_events, alerts


def projects_waiting(conn: psycopg.Connection) -> list[str]:
    """Projects with verdicts not grouped yet."""
    rows = conn.execute("select project_id::text from anomalies where grouped_at is null"
                        " union select project_id::text from regressions where grouped_at is null").fetchall()
    return [r[0] for r in rows]


def group_project(conn: psycopg.Connection, project_id: str, upto: int, default_min_severity: str,
                  summary: GroupingSummary) -> None:
    """Feed the project's new verdicts and sessions (marts up to watermark ``upto``) to grouping
    and store the result, in one transaction (``conn`` in autocommit mode)."""
    with conn.transaction():
        # One grouping of a project at a time, whatever runs overlap.
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (_watermark_name(project_id),))
        row = conn.execute("select watermark from pipeline_watermarks where name = %s",
                           (_watermark_name(project_id),)).fetchone()
        after = row[0] if row else 0
        sessions = _sessions(conn, project_id, after, upto)
        verdicts = _ungrouped(conn, project_id)
        missing = set(verdicts.get_column("session_id").to_list()) - set(sessions.get_column("session_id").to_list())
        if missing:
            # Verdicts of sessions fed before (a backfill judged them only now): their sessions
            # give the verdicts their time; they are not new traffic, but counting them is rare.
            sessions = pl.concat([sessions, _sessions_of(conn, project_id, sorted(missing))]).sort("started_at")
        if sessions.is_empty() and verdicts.is_empty():
            return
        result = grouping.update(_active(conn, project_id), verdicts, sessions)
        opened, resolved, events, alerts = _store(conn, result, default_min_severity)
        _mark_grouped(conn, project_id, verdicts)
        conn.execute(
            "insert into pipeline_watermarks (name, watermark) values (%s, %s) on conflict (name) do update"
            " set watermark = greatest(pipeline_watermarks.watermark, excluded.watermark), updated_at = now()",
            (_watermark_name(project_id), upto))
    summary.incidents_opened += opened
    summary.incidents_resolved += resolved
    summary.events += events
    summary.alerts += alerts
    summary.verdicts_grouped += verdicts.height
    summary.touched.append(project_id)
