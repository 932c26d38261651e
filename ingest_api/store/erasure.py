"""Erasure (the right to be forgotten): every row of a project's chosen sessions, wherever the
platform keeps it, in one transaction, with an audit row that records who asked for what,
when and how many rows went, never the erased content.

What goes, for the chosen sessions (one session, every session of a ``userId``, or an agent's
sessions in a time range; found in the raw tables and, past raw retention, in the marts):

* raw: the session, its turns, LLM calls and tool calls; the OpenTelemetry spans, traces and
  assembled-session records of the traces it was made of (for a ``userId``, also the spans that
  carry it and are not assembled yet);
* marts: every row of every table of schema ``marts`` with its ``session_id`` (or
  ``related_session_id``): facts, details, the search index. Aggregates (``agg_*``) hold no
  session's content, only counts and sums over many, and are kept as they are;
* verdicts: its anomalies and regressions, every alert about it (pending or not), its incident
  memberships; its id is taken out of incidents' and incident events' example lists;
* the ledger row stays, marked ``erased_at``: a tombstone without content, so that the
  session sent again is counted as a duplicate and never stored again.

Erasing twice is harmless: the second finds nothing and records that it found nothing.
The transaction takes the pipeline's lock (``orchestration.watermark.PIPELINE_LOCK``), so a
build of the marts that read the session before it was erased cannot write it back after.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg

# orchestration.watermark.PIPELINE_LOCK (the API may not import orchestration; a test keeps them equal).
PIPELINE_LOCK = 0x6261_6775
# How long an erasure waits for a build of the marts in progress.
LOCK_TIMEOUT = "30s"


class Busy(Exception):
    """The marts' build held the pipeline lock for longer than LOCK_TIMEOUT."""


@dataclass(frozen=True)
class Criteria:
    """Exactly one of: a session id; a user id; an agent with a time range [since, until)."""

    session_id: uuid.UUID | None = None
    user_id: str | None = None
    agent_name: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def audit(self) -> dict[str, Any]:
        """What the audit row says was asked: no content (a user id as its SHA-256)."""
        if self.session_id is not None:
            return {"sessionId": str(self.session_id)}
        if self.user_id is not None:
            return {"userIdSha256": hashlib.sha256(self.user_id.encode()).hexdigest()}
        return {
            "agentName": self.agent_name,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


@dataclass
class Erasure:
    erasure_id: uuid.UUID
    sessions: int
    rows_deleted: dict[str, int] = field(default_factory=dict)
    requested_at: datetime | None = None
    criteria: dict[str, Any] = field(default_factory=dict)
    requested_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "erasure_id": str(self.erasure_id),
            "sessions": self.sessions,
            "rows_deleted": self.rows_deleted,
            "requested_at": self.requested_at,
            "criteria": self.criteria,
            "requested_by": self.requested_by,
        }


SESSIONS_BY_USER = """
    select session_id from agent_sessions where project_id = %(project)s and user_id = %(user)s
    union select session_id from marts.fct_sessions where project_id = %(project)s and user_id = %(user)s
"""
SESSIONS_BY_AGENT = """
    select session_id from agent_sessions
    where project_id = %(project)s and agent_name = %(agent)s
      and (%(since)s::timestamptz is null or start_time >= %(since)s)
      and (%(until)s::timestamptz is null or start_time < %(until)s)
    union
    select session_id from marts.fct_sessions
    where project_id = %(project)s and agent_name = %(agent)s
      and (%(since)s::timestamptz is null or started_at >= %(since)s)
      and (%(until)s::timestamptz is null or started_at < %(until)s)
"""


async def _column_sets(conn: psycopg.AsyncConnection) -> dict[str, set[str]]:
    """Base tables of schema marts with project_id: name -> columns."""
    cur = await conn.execute(
        """
        select c.table_name, array_agg(c.column_name::text)
        from information_schema.columns c
        join information_schema.tables t using (table_schema, table_name)
        where c.table_schema = 'marts' and t.table_type = 'BASE TABLE'
        group by c.table_name having bool_or(c.column_name = 'project_id')
        """
    )
    return {name: set(columns) for name, columns in await cur.fetchall()}


async def _ids(conn: psycopg.AsyncConnection, sql: str, params: dict, marts: dict[str, set[str]]) -> list[uuid.UUID]:
    if "fct_sessions" not in marts:  # the marts not built yet: the raw tables alone
        sql = sql.split("union")[0]
    cur = await conn.execute(sql, params)
    return [r[0] for r in await cur.fetchall()]


async def _delete(conn: psycopg.AsyncConnection, counts: dict[str, int], name: str, sql: str, params) -> None:
    cur = await conn.execute(sql, params)
    if cur.rowcount:
        counts[name] = counts.get(name, 0) + cur.rowcount


async def _time_spans(conn: psycopg.AsyncConnection, p: dict) -> dict[str, str]:
    """Conditions bounding the deletes from the time-partitioned tables to the times the sessions
    (``p["ids"]``) and their LLM calls started: a range erased from the last hour then touches
    only the newest chunks, not every compressed chunk of the project. None where a session has
    no recorded start or calls without their span (stored before migration 0009)."""
    cur = await conn.execute(
        "select count(*), count(start_time), min(start_time), max(start_time) from session_ledger"
        " where project_id = %(project)s and session_id = any(%(ids)s)",
        p,
    )
    sessions, with_start, p["sessions_from"], p["sessions_until"] = await cur.fetchone()
    if not sessions or with_start < len(set(p["ids"])):  # a session with no recorded start, or none at all
        return {}
    spans = {"agent_sessions": " and start_time >= %(sessions_from)s and start_time <= %(sessions_until)s"}
    cur = await conn.execute(
        "select bool_and(coalesce(llm_call_count = 0 or llm_calls_from is not null, false)),"
        " min(llm_calls_from), max(llm_calls_until)"
        " from agent_sessions where project_id = %(project)s and session_id = any(%(ids)s)" + spans["agent_sessions"],
        p,
    )
    summarised, p["calls_from"], p["calls_until"] = await cur.fetchone()
    if summarised:  # every session's calls have their span (or it has none)
        spans["llm_calls"] = (" and start_time >= %(calls_from)s and start_time <= %(calls_until)s"
                              if p["calls_from"] is not None else " and false")
    return spans


async def _recount_agents(conn: psycopg.AsyncConnection, project_id: uuid.UUID) -> None:
    """The per-agent session counts (migration 0009, where applied) follow the deleted sessions."""
    cur = await conn.execute("select to_regprocedure('bagula_recount_agents(uuid)') is not null")
    if (await cur.fetchone())[0]:
        await conn.execute("select bagula_recount_agents(%s)", (project_id,))


async def erase(conn: psycopg.AsyncConnection, project_id: uuid.UUID, criteria: Criteria, requested_by: str) -> Erasure:
    """Erase the sessions the criteria choose, in one transaction; the audit row is its last write."""
    p = {"project": project_id}
    counts: dict[str, int] = {}
    async with conn.transaction():
        await conn.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
        try:
            await conn.execute("select pg_advisory_xact_lock(%s)", (PIPELINE_LOCK,))
        except psycopg.errors.LockNotAvailable:
            raise Busy() from None
        await conn.execute("set local lock_timeout = 0")
        # An erasure must finish: on TimescaleDB, deleting rows of compressed chunks decompresses
        # them, past a default limit of 100,000 rows per transaction (a user's sessions across
        # months of history). A placeholder setting where TimescaleDB is not loaded.
        await conn.execute("set local timescaledb.max_tuples_decompressed_per_dml_transaction = 0")
        marts = await _column_sets(conn)
        traces: list[bytes] = []
        if criteria.session_id is not None:
            ids = [criteria.session_id]
        elif criteria.user_id is not None:
            ids = await _ids(conn, SESSIONS_BY_USER, {**p, "user": criteria.user_id}, marts)
            # Spans that carry the user and are not in a session yet.
            cur = await conn.execute(
                "select distinct trace_id from otlp_spans where project_id = %(project)s"
                " and (attributes ->> 'user.id' = %(user)s or attributes ->> 'enduser.id' = %(user)s)",
                {**p, "user": criteria.user_id},
            )
            traces += [r[0] for r in await cur.fetchall()]
        else:
            ids = await _ids(
                conn,
                SESSIONS_BY_AGENT,
                {**p, "agent": criteria.agent_name, "since": criteria.since, "until": criteria.until},
                marts,
            )
        p["ids"] = ids

        # OpenTelemetry: the traces the sessions were made of.
        cur = await conn.execute(
            "select coalesce(array_agg(distinct t), '{}') from otlp_sessions, unnest(trace_ids) t"
            " where project_id = %(project)s and session_id = any(%(ids)s)",
            p,
        )
        p["traces"] = list({*traces, *(await cur.fetchone())[0]})
        await _delete(
            conn,
            counts,
            "otlp_spans",
            "delete from otlp_spans where project_id = %(project)s and trace_id = any(%(traces)s)",
            p,
        )
        await _delete(
            conn,
            counts,
            "otlp_traces",
            "delete from otlp_traces where project_id = %(project)s and trace_id = any(%(traces)s)",
            p,
        )
        await _delete(
            conn,
            counts,
            "otlp_sessions",
            "delete from otlp_sessions where project_id = %(project)s"
            " and (session_id = any(%(ids)s) or trace_ids && %(traces)s::bytea[])",
            p,
        )

        spans = await _time_spans(conn, p)
        for table in ("session_turns", "llm_calls", "tool_calls", "agent_sessions"):
            await _delete(
                conn,
                counts,
                table,
                f"delete from {table} where project_id = %(project)s and session_id = any(%(ids)s)"
                + spans.get(table, ""),
                p,
            )

        for table, columns in sorted(marts.items()):
            keys = [c for c in ("session_id", "related_session_id") if c in columns]
            if keys:
                match = " or ".join(f'"{c}" = any(%(ids)s)' for c in keys)
                await _delete(
                    conn,
                    counts,
                    f"marts.{table}",
                    f'delete from marts."{table}" where project_id = %(project)s and ({match})',
                    p,
                )

        await _delete(
            conn,
            counts,
            "alerts",
            "delete from alerts where project_id = %(project)s and (session_id = any(%(ids)s)"
            " or source_id in (select anomaly_id from anomalies"
            "   where project_id = %(project)s and session_id = any(%(ids)s))"
            " or source_id in (select regression_id from regressions"
            "   where project_id = %(project)s and session_id = any(%(ids)s)))",
            p,
        )
        for table in ("anomalies", "regressions", "incident_members"):
            await _delete(
                conn,
                counts,
                table,
                f"delete from {table} where project_id = %(project)s and session_id = any(%(ids)s)",
                p,
            )
        for table in ("incidents", "incident_events"):
            await _delete(
                conn,
                counts,
                f"{table} examples",
                f"update {table} set example_session_ids = array(select s from unnest(example_session_ids) s"
                "   where s <> all(%(ids)s))"
                " where project_id = %(project)s and example_session_ids && %(ids)s::uuid[]",
                p,
            )
        await _delete(
            conn,
            counts,
            "baselines session",
            "update baselines set session_id = null where project_id = %(project)s and session_id = any(%(ids)s)",
            p,
        )

        if counts.get("agent_sessions"):
            await _recount_agents(conn, project_id)
        # The tombstone: the ledger row (ids only) stays, so the session is never stored again.
        cur = await conn.execute(
            "update session_ledger set erased_at = now()"
            " where project_id = %(project)s and session_id = any(%(ids)s) and erased_at is null",
            p,
        )
        sessions = cur.rowcount
        cur = await conn.execute(
            "insert into erasures (project_id, requested_by, criteria, sessions, rows_deleted)"
            " values (%s, %s, %s, %s, %s) returning erasure_id, requested_at",
            (
                project_id,
                requested_by,
                orjson.dumps(criteria.audit()).decode(),
                sessions,
                orjson.dumps(counts).decode(),
            ),
        )
        erasure_id, at = await cur.fetchone()
    return Erasure(erasure_id, sessions, counts, at, criteria.audit(), requested_by)


async def list_erasures(conn: psycopg.AsyncConnection, project_id: uuid.UUID, limit: int = 100) -> list[Erasure]:
    """The project's audit trail, newest first."""
    cur = await conn.execute(
        "select erasure_id, sessions, rows_deleted, requested_at, criteria, requested_by from erasures"
        " where project_id = %s order by requested_at desc, erasure_id limit %s",
        (project_id, limit),
    )
    return [Erasure(r[0], r[1], r[2], r[3], r[4], r[5]) for r in await cur.fetchall()]
