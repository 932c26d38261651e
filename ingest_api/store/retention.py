"""Per-project data policy (retention and server-side redaction) and applying retention.

Three retention classes, each in days, per project (``project_data_policies``; null: the
platform default, ``BAGULA_RETENTION_*_DAYS``):

* **raw**: the payloads as sent: the raw tables (sessions with their turns, LLM and tool
  calls; OpenTelemetry spans, traces and assembled sessions) and the marts that copy their
  text (``PAYLOAD_MARTS``: search index, session, turn and call details, links);
* **marts**: the figures: facts and aggregates (``fct_sessions``, ``agg_*``, ...);
* **verdicts**: anomalies, regressions, closed incidents with their events, delivered or
  failed alerts, and trained detection models.

``apply`` deletes what is past its time in batches (``BATCH`` rows, each batch its own short
transaction), so no lock is held for long and ingest goes on. Raw sessions go whole: a batch
of a project's oldest sessions past the cutoff, then their turns, calls and the sessions
themselves. On TimescaleDB the hypertables' old chunks are compressed by a compression
policy (migration 0008), deletes work on compressed chunks too, and once every project is
past a chunk, ``drop_chunks`` removes the emptied chunks. A table-wide TimescaleDB retention
policy cannot express a per-project retention, so rows go by these deletes.

The session ledger (ids only) is kept: it is what makes ingestion exactly-once and keeps
erased sessions from coming back.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg

REDACTOR_NAMES = ("emails", "phone_numbers", "card_numbers", "api_keys")
# Rows per delete batch (one short transaction each).
BATCH = 5000
# Marts holding the sessions' text: they follow the raw payloads' retention.
PAYLOAD_MARTS = frozenset(
    {"session_search", "fct_session_details", "fct_turn_details", "fct_call_details", "fct_session_links"}
)
# A mart's time column: the first of these it has.
MART_TIME_COLUMNS = ("hour", "day", "session_started_at", "started_at", "child_started_at")
# One runner at a time, across processes.
RETENTION_LOCK = 0x6267_7274  # "bgrt"
CLASSES = ("raw", "marts", "verdicts")


@dataclass(frozen=True)
class Defaults:
    """The platform's retention, in days, for projects without their own."""

    raw_days: int = 90
    marts_days: int = 395
    verdicts_days: int = 395


@dataclass(frozen=True)
class Policy:
    project_id: uuid.UUID
    project_name: str
    raw_days: int
    marts_days: int
    verdicts_days: int
    # which of the three are the project's own (the others are the platform's default)
    own: frozenset[str]
    redactors: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project_name,
            "raw_days": self.raw_days,
            "marts_days": self.marts_days,
            "verdicts_days": self.verdicts_days,
            "defaults": sorted(set(CLASSES) - self.own),
            "redactors": list(self.redactors),
        }


POLICIES = """
    select p.project_id, p.name,
           coalesce(d.raw_days, %(raw)s), coalesce(d.marts_days, %(marts)s), coalesce(d.verdicts_days, %(verdicts)s),
           d.raw_days is not null, d.marts_days is not null, d.verdicts_days is not null,
           coalesce(d.redactors, '{}')
    from projects p left join project_data_policies d using (project_id)
    where %(project)s::uuid is null or p.project_id = %(project)s
    order by p.name
"""

# Each argument: a value to set, null to fall back to the default; columns not named keep theirs.
UPSERT = """
    insert into project_data_policies (project_id, raw_days, marts_days, verdicts_days, redactors)
    values (%(project)s, %(raw_days)s, %(marts_days)s, %(verdicts_days)s, coalesce(%(redactors)s::text[], '{}'))
    on conflict (project_id) do update set
        raw_days = case when %(set_raw)s then excluded.raw_days else project_data_policies.raw_days end,
        marts_days = case when %(set_marts)s then excluded.marts_days else project_data_policies.marts_days end,
        verdicts_days = case when %(set_verdicts)s then excluded.verdicts_days
                             else project_data_policies.verdicts_days end,
        redactors = case when %(redactors)s::text[] is not null then excluded.redactors
                         else project_data_policies.redactors end,
        updated_at = now()
"""

UNSET: Any = object()


def _params(defaults: Defaults, project_id: uuid.UUID | None) -> dict[str, Any]:
    return {
        "raw": defaults.raw_days,
        "marts": defaults.marts_days,
        "verdicts": defaults.verdicts_days,
        "project": project_id,
    }


def _policy(row: tuple) -> Policy:
    own = frozenset(c for c, is_own in zip(CLASSES, row[5:8], strict=True) if is_own)
    return Policy(row[0], row[1], row[2], row[3], row[4], own, tuple(row[8]))


def _upsert_params(project_id: uuid.UUID, raw_days, marts_days, verdicts_days, redactors) -> dict[str, Any]:
    if redactors is not UNSET and redactors is not None:
        unknown = set(redactors) - set(REDACTOR_NAMES)
        if unknown:
            raise ValueError(f"unknown redactors {sorted(unknown)}; known: {', '.join(REDACTOR_NAMES)}")
        redactors = [n for n in REDACTOR_NAMES if n in redactors]
    for name, days in (("raw_days", raw_days), ("marts_days", marts_days), ("verdicts_days", verdicts_days)):
        if days is not UNSET and days is not None and (not isinstance(days, int) or not 1 <= days <= 36500):
            raise ValueError(f"{name} must be a whole number of days, from 1 to 36500")
    return {
        "project": project_id,
        "raw_days": None if raw_days is UNSET else raw_days,
        "set_raw": raw_days is not UNSET,
        "marts_days": None if marts_days is UNSET else marts_days,
        "set_marts": marts_days is not UNSET,
        "verdicts_days": None if verdicts_days is UNSET else verdicts_days,
        "set_verdicts": verdicts_days is not UNSET,
        "redactors": None if redactors is UNSET else (redactors or []),
    }


def policies(conn: psycopg.Connection, defaults: Defaults, project_id: uuid.UUID | None = None) -> list[Policy]:
    """Every project's policy (or one project's), defaults filled in."""
    return [_policy(r) for r in conn.execute(POLICIES, _params(defaults, project_id)).fetchall()]


def set_policy(
    conn: psycopg.Connection,
    project_id: uuid.UUID,
    *,
    raw_days=UNSET,
    marts_days=UNSET,
    verdicts_days=UNSET,
    redactors=UNSET,
) -> None:
    """Change what is named (None: back to the default; ValueError for values out of range)."""
    conn.execute(UPSERT, _upsert_params(project_id, raw_days, marts_days, verdicts_days, redactors))


async def policy_async(conn: psycopg.AsyncConnection, defaults: Defaults, project_id: uuid.UUID) -> Policy:
    cur = await conn.execute(POLICIES, _params(defaults, project_id))
    return _policy(await cur.fetchone())


async def set_policy_async(
    conn: psycopg.AsyncConnection,
    project_id: uuid.UUID,
    *,
    raw_days=UNSET,
    marts_days=UNSET,
    verdicts_days=UNSET,
    redactors=UNSET,
) -> None:
    await conn.execute(UPSERT, _upsert_params(project_id, raw_days, marts_days, verdicts_days, redactors))


# ---------------------------------------------------------------- applying retention

RAW_SESSIONS = """
    select session_id from agent_sessions
    where project_id = %s and start_time < %s
    order by start_time limit %s
"""
# By their own time: on a hypertable the time bound excludes every newer chunk (and compressed
# batches by their min/max), where a filter on session ids would visit them all.
RAW_LLM_CALLS = f"""
    delete from llm_calls where project_id = %(project)s and start_time < %(cutoff)s
      and (session_id, call_id) in (
        select session_id, call_id from llm_calls
        where project_id = %(project)s and start_time < %(cutoff)s limit {BATCH})
"""


def _batched(conn: psycopg.Connection, sql: str, params: tuple | dict) -> int:
    """Run a delete of at most BATCH rows until it deletes fewer; each batch commits on its own."""
    total = 0
    while True:
        with conn.transaction():
            count = conn.execute(sql, params).rowcount
        total += count
        if count < BATCH:
            return total


def _by_ctid(table: str, where: str) -> str:
    # Plain tables only (a hypertable's ctids repeat across chunks).
    return f"delete from {table} where ctid = any(array(select ctid from {table} where {where} limit {BATCH}))"


def _add(counts: dict[str, int], table: str, count: int) -> None:
    counts[table] = counts.get(table, 0) + count


def _recount_agents(conn: psycopg.Connection, project_id: uuid.UUID) -> None:
    """The per-agent session counts (migration 0009, where applied) follow the deleted sessions."""
    if conn.execute("select to_regprocedure('bagula_recount_agents(uuid)') is not null").fetchone()[0]:
        conn.execute("select bagula_recount_agents(%s)", (project_id,))


def _raw_sessions(conn: psycopg.Connection, project_id: uuid.UUID, cutoff: datetime, counts: dict[str, int]) -> None:
    """A batch of the project's oldest sessions past the cutoff at a time: their turns and tool
    calls, then the sessions; then LLM calls by their own time."""
    deleted = 0
    while True:
        with conn.transaction():
            ids = [r[0] for r in conn.execute(RAW_SESSIONS, (project_id, cutoff, BATCH)).fetchall()]
            for table in ("session_turns", "tool_calls"):
                _add(
                    counts,
                    table,
                    conn.execute(
                        f"delete from {table} where project_id = %s and session_id = any(%s)", (project_id, ids)
                    ).rowcount,
                )
            sessions = conn.execute(
                "delete from agent_sessions where project_id = %s and start_time < %s and session_id = any(%s)",
                (project_id, cutoff, ids),
            ).rowcount
            _add(counts, "agent_sessions", sessions)
            deleted += sessions
        if len(ids) < BATCH:
            break
    if deleted:
        _recount_agents(conn, project_id)
    _add(counts, "llm_calls", _batched(conn, RAW_LLM_CALLS, {"project": project_id, "cutoff": cutoff}))


def _raw_otlp(conn: psycopg.Connection, project_id: uuid.UUID, cutoff: datetime, counts: dict[str, int]) -> None:
    for table, where in (
        ("otlp_spans", "project_id = %s and start_time < %s"),
        ("otlp_traces", "project_id = %s and not pending and last_received_at < %s"),
        ("otlp_sessions", "project_id = %s and assembled_at < %s"),
    ):
        counts[table] = counts.get(table, 0) + _batched(conn, _by_ctid(table, where), (project_id, cutoff))


def mart_tables(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Base tables of schema marts that carry project_id: name -> columns."""
    rows = conn.execute(
        """
        select c.table_name, array_agg(c.column_name::text order by c.ordinal_position)
        from information_schema.columns c
        join information_schema.tables t using (table_schema, table_name)
        where c.table_schema = 'marts' and t.table_type = 'BASE TABLE'
        group by c.table_name
        having bool_or(c.column_name = 'project_id')
        """
    ).fetchall()
    return {name: columns for name, columns in rows}


def mart_time_column(columns: list[str]) -> str | None:
    return next((c for c in MART_TIME_COLUMNS if c in columns), None)


def _marts(
    conn: psycopg.Connection,
    project_id: uuid.UUID,
    raw_cutoff: datetime,
    marts_cutoff: datetime,
    counts: dict[str, int],
    uncovered: list[str],
) -> None:
    for table, columns in sorted(mart_tables(conn).items()):
        column = mart_time_column(columns)
        if column is None:
            uncovered.append(table)
            continue
        cutoff = raw_cutoff if table in PAYLOAD_MARTS else marts_cutoff
        sql = _by_ctid(f'marts."{table}"', f'project_id = %s and "{column}" < %s')
        counts[f"marts.{table}"] = counts.get(f"marts.{table}", 0) + _batched(conn, sql, (project_id, cutoff))


def _verdicts(conn: psycopg.Connection, project_id: uuid.UUID, cutoff: datetime, counts: dict[str, int]) -> None:
    for table, where in (
        ("anomalies", "project_id = %s and coalesce(session_started_at, detected_at) < %s"),
        ("regressions", "project_id = %s and coalesce(session_started_at, detected_at) < %s"),
        ("alerts", "project_id = %s and status <> 'pending' and created_at < %s"),
        (
            "incident_events",
            "project_id = %s and incident_id in (select incident_id from incidents"
            " where project_id = %s and status in ('resolved', 'discarded') and last_seen < %s)",
        ),
        # members go with their incident (on delete cascade)
        ("incidents", "project_id = %s and status in ('resolved', 'discarded') and last_seen < %s"),
        ("detection_models", "project_id = %s and trained_for_day < %s"),
    ):
        params = (project_id, project_id, cutoff) if table == "incident_events" else (project_id, cutoff)
        counts[table] = counts.get(table, 0) + _batched(conn, _by_ctid(table, where), params)


def _drop_emptied_chunks(conn: psycopg.Connection, cutoff: datetime, counts: dict[str, int]) -> None:
    """TimescaleDB: chunks past every project's raw retention hold nothing any more (their rows
    were deleted above); drop them rather than keep empty (compressed) chunks. drop_chunks
    takes the table's owner: a least-privilege role (the live path's, bagula_transform) leaves
    the empty chunks to the owner's next run (`bagula retention apply` as the owner, e.g. init)."""
    hypertables = conn.execute(
        "select hypertable_name from timescaledb_information.hypertables"
        " where hypertable_name in ('agent_sessions', 'llm_calls')"
        " and pg_has_role(current_user, owner, 'USAGE')"
    ).fetchall()
    for (table,) in hypertables:
        dropped = conn.execute(
            "select count(*) from drop_chunks(%s::regclass, older_than => %s)", (table, cutoff)
        ).fetchone()[0]
        counts[f"{table} chunks dropped"] = dropped


def _timescaledb(conn: psycopg.Connection) -> bool:
    return conn.execute("select exists (select 1 from pg_extension where extname = 'timescaledb')").fetchone()[0]


@dataclass
class RetentionRun:
    rows_deleted: dict[str, int]
    # marts tables without a known time column (kept whole; a test keeps this empty)
    uncovered: list[str]
    seconds: float


def apply(conn: psycopg.Connection, defaults: Defaults, now: datetime | None = None) -> RetentionRun | None:
    """Delete what is past every project's retention. ``conn`` must be in autocommit mode.
    None when another process is applying retention right now."""
    if not conn.execute("select pg_try_advisory_lock(%s)", (RETENTION_LOCK,)).fetchone()[0]:
        return None
    started = time.monotonic()
    try:
        # A batch's delete from a compressed chunk decompresses what it touches; TimescaleDB's
        # default limit (100,000 rows a transaction) would stop retention of a big project there.
        # A placeholder setting where TimescaleDB is not loaded.
        conn.execute("set timescaledb.max_tuples_decompressed_per_dml_transaction = 0")
        now = now or datetime.now(timezone.utc)
        run_id = conn.execute("insert into retention_runs default values returning run_id").fetchone()[0]
        counts: dict[str, int] = {}
        uncovered: list[str] = []
        oldest_raw = now
        for p in policies(conn, defaults):
            raw = now - timedelta(days=p.raw_days)
            oldest_raw = min(oldest_raw, raw)
            _raw_sessions(conn, p.project_id, raw, counts)
            _raw_otlp(conn, p.project_id, raw, counts)
            _marts(conn, p.project_id, raw, now - timedelta(days=p.marts_days), counts, uncovered)
            _verdicts(conn, p.project_id, now - timedelta(days=p.verdicts_days), counts)
        if _timescaledb(conn):
            # Default included: a project created later starts with it.
            oldest_raw = min(oldest_raw, now - timedelta(days=defaults.raw_days))
            _drop_emptied_chunks(conn, oldest_raw, counts)
        conn.execute(
            "update retention_runs set finished_at = now(), rows_deleted = %s where run_id = %s",
            (orjson.dumps(counts).decode(), run_id),
        )
        return RetentionRun(counts, sorted(set(uncovered)), time.monotonic() - started)
    finally:
        conn.execute("reset timescaledb.max_tuples_decompressed_per_dml_transaction")
        conn.execute("select pg_advisory_unlock(%s)", (RETENTION_LOCK,))


def last_run(conn: psycopg.Connection) -> tuple[datetime, datetime | None, dict | None] | None:
    """(started, finished, rows deleted) of the latest retention run, or None."""
    row = conn.execute(
        "select started_at, finished_at, rows_deleted from retention_runs order by run_id desc limit 1"
    ).fetchone()
    return tuple(row) if row else None


def apply_if_due(conn: psycopg.Connection, defaults: Defaults, every_s: float) -> RetentionRun | None:
    """``apply`` unless a run started less than ``every_s`` ago (by any process)."""
    due = conn.execute(
        "select not exists (select 1 from retention_runs where started_at > now() - make_interval(secs => %s))",
        (every_s,),
    ).fetchone()[0]
    return apply(conn, defaults) if due else None


def defaults_of(settings) -> Defaults:
    """The platform defaults from ``ingest_api.settings.ApiSettings``."""
    return Defaults(settings.retention_raw_days, settings.retention_marts_days, settings.retention_verdicts_days)
