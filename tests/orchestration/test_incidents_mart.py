"""marts.fct_incidents: one row per incident as the Incidents dashboard reads it, checked
against the rows detection's grouping writes (here written by hand, one per status), and
held to its dbt tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from ingest_api import db
from ingest_api.store import keys
from orchestration.dbt import run_dbt

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
MEMBER = """insert into incident_members (incident_id, project_id, agent_name, session_id, verdict_type,
                                          session_started_at, severity) values (%s, %s, %s, %s, %s, %s, %s)"""
INCIDENT = """insert into incidents (incident_id, project_id, agent_name, kind, status, first_seen, last_seen, opened_at,
                                     resolved_at, resolution, opened_severity, peak_severity, current_severity,
                                     affected_sessions, span_sessions, traffic_share, verdict_count, summary,
                                     example_session_ids, acknowledged_at)
              values (%(incident_id)s, %(project_id)s, %(agent_name)s, %(kind)s, %(status)s, %(first_seen)s,
                      %(last_seen)s, %(opened_at)s, %(resolved_at)s, %(resolution)s, %(opened_severity)s,
                      %(peak_severity)s, %(current_severity)s, %(affected_sessions)s, %(span_sessions)s,
                      %(traffic_share)s, %(verdict_count)s, %(summary)s, %(example_session_ids)s, %(acknowledged_at)s)"""


def incident(project_id, status: str, kind: str, sessions: list[uuid.UUID], severity: str, **extra) -> dict:
    return {
        "incident_id": uuid.uuid4(),
        "project_id": project_id,
        "agent_name": "writer-agent",
        "kind": kind,
        "status": status,
        "first_seen": T0,
        "last_seen": T0 + timedelta(hours=2),
        "opened_at": T0 + timedelta(minutes=20) if status in ("open", "resolved") else None,
        "resolved_at": None,
        "resolution": None,
        "opened_severity": severity if status in ("open", "resolved") else None,
        "peak_severity": severity,
        "current_severity": severity,
        "affected_sessions": len(sessions),
        "span_sessions": 4 * len(sessions),
        "traffic_share": 0.25,
        "verdict_count": len(sessions) + 1,
        "summary": f"{kind}: cost per call 3.7x the trailing median",
        "example_session_ids": sessions[::-1],
        "acknowledged_at": None,
        **extra,
    }


@pytest.fixture(scope="module")
def incidents_db(pg):
    """A database of its own with a project, four incidents (open, pending, resolved, discarded) and
    their memberships, and fct_incidents built and tested by dbt."""
    url = pg.create_database(f"incidents_mart_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    with psycopg.connect(url) as conn:
        project_id = keys.create_key(conn, "incident-mart").project_id
        written = []
        for status, kind, severity, count, extra in (
            ("open", "cost_spike", "critical", 3, {"acknowledged_at": T0 + timedelta(hours=1)}),
            ("pending", "latency_spike", "minor", 1, {}),
            ("resolved", "model_change", "major", 2, {"resolved_at": T0 + timedelta(hours=5), "resolution": "quiet"}),
            ("discarded", "skill_bloat", "minor", 1, {}),
        ):
            sessions = [uuid.uuid4() for _ in range(count)]
            row = incident(project_id, status, kind, sessions, severity, **extra)
            conn.execute(INCIDENT, row)
            for i, session_id in enumerate(sessions):
                started = T0 + timedelta(minutes=10 * i)
                conn.execute(
                    MEMBER, (row["incident_id"], project_id, "writer-agent", session_id, kind, started, severity)
                )
                # The same session flagged by a corroborating kind too: a second member, not a second session.
                if i == 0:
                    conn.execute(
                        MEMBER,
                        (row["incident_id"], project_id, "writer-agent", session_id, "regression", started, "minor"),
                    )
            written.append(row)
    assert run_dbt(url, "run", "--select", "+fct_incidents"), "dbt run failed"
    tested = run_dbt(url, "test", "--select", "fct_incidents")
    return url, written, tested


def test_one_row_per_incident_that_was_seen_with_its_figures(incidents_db):
    url, written, _ = incidents_db
    with psycopg.connect(url) as conn:
        cur = conn.execute("select * from marts.fct_incidents")
        names = [c.name for c in cur.description]
        mart = {row["incident_id"]: row for row in (dict(zip(names, r, strict=True)) for r in cur.fetchall())}

    # A discarded incident (pending, went quiet without opening) is not one to show.
    kept = [w for w in written if w["status"] != "discarded"]
    assert set(mart) == {w["incident_id"] for w in kept}
    for w in kept:
        row = mart[w["incident_id"]]
        sessions = w["example_session_ids"]
        assert row["project_name"] == "incident-mart"
        assert (row["agent_name"], row["kind"], row["status"], row["peak_severity"]) == (
            w["agent_name"],
            w["kind"],
            w["status"],
            w["peak_severity"],
        )
        assert (row["first_seen"], row["last_seen"], row["opened_at"], row["resolved_at"], row["acknowledged_at"]) == (
            w["first_seen"],
            w["last_seen"],
            w["opened_at"],
            w["resolved_at"],
            w["acknowledged_at"],
        )
        # Members: one per session and verdict type (the first session has two).
        assert row["member_count"] == len(sessions) + 1
        assert row["member_session_count"] == len(sessions)
        assert row["example_session_id"] == sessions[0]
        assert row["example_session_count"] == len(sessions)
        assert row["summary"] == w["summary"]


def test_open_incidents_sort_first_then_the_worst(incidents_db):
    url, _, _ = incidents_db
    with psycopg.connect(url) as conn:
        statuses = conn.execute(
            "select status from marts.fct_incidents order by status_order, peak_severity_rank desc, last_seen desc"
        ).fetchall()
        ranks = dict(conn.execute("select peak_severity, peak_severity_rank from marts.fct_incidents").fetchall())
    assert [s for (s,) in statuses] == ["open", "pending", "resolved"]
    assert ranks == {"critical": 3, "minor": 1, "major": 2}


def test_the_mart_passes_its_dbt_tests_and_they_can_fail(incidents_db):
    url, written, tested = incidents_db
    assert tested, "dbt test --select fct_incidents failed"
    # A member count below zero cannot happen; a status outside the list can be written by
    # hand: the accepted_values test must catch it.
    first = written[0]["incident_id"]
    with psycopg.connect(url) as conn:
        conn.execute("alter table incidents drop constraint incidents_status_check")
        conn.execute("update incidents set status = 'snoozed' where incident_id = %s", (first,))
    try:
        assert not run_dbt(url, "test", "--select", "fct_incidents")  # accepted_values of status
    finally:
        with psycopg.connect(url) as conn:
            conn.execute("update incidents set status = 'open' where incident_id = %s", (first,))
