"""OpenTelemetry spans: landing them raw, exactly once, and the assembler's reads and writes.

Landing (one transaction per export request): the spans are COPYed into a temporary table,
then inserted into ``otlp_spans`` with ``ON CONFLICT DO NOTHING`` on (project, trace id, span
id), so a resent export adds nothing; the traces that received new spans are marked pending
in ``otlp_traces`` (ready once quiet for the quiet period), in the same statement.

Assembly reads pending traces whose session is quiet (``FOR UPDATE SKIP LOCKED``: any number
of API processes share the work, none waits on another), the spans of those traces that are
not in their previous assembly (``pg_visible_in_snapshot`` against the snapshot that
assembly read), and records what became of them. docs/otlp.md tells the whole rule.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_loads

from ingest_api.otlp.decode import SPAN_COLUMNS
from ingest_api.store.keys import Principal

INCOMING = """
    create temp table if not exists otlp_incoming (
        project_id uuid, api_key_id uuid, trace_id bytea, span_id bytea, parent_span_id bytea, name text,
        kind integer, start_unix_nano bigint, end_unix_nano bigint, flags bigint, status_code integer,
        status_message text, conversation_id text, attributes jsonb, events jsonb, links jsonb, resource jsonb,
        scope_name text, scope_version text
    ) on commit delete rows
"""
COLUMNS = "project_id, api_key_id, " + SPAN_COLUMNS

# In key order, so that two requests holding the same spans or traces wait for each other
# instead of deadlocking.
LAND = f"""
    with landed as (
        insert into otlp_spans ({COLUMNS})
        select {COLUMNS} from otlp_incoming order by trace_id, span_id
        on conflict (project_id, trace_id, span_id) do nothing
        returning project_id, trace_id, conversation_id
    ),
    traces as (
        select project_id, trace_id, min(conversation_id) as conversation_id, count(*) as spans
        from landed group by project_id, trace_id
    ),
    marked as (
        insert into otlp_traces (project_id, trace_id, api_key_id, conversation_id, ready_at)
        select project_id, trace_id, %(key)s, conversation_id, now() + make_interval(secs => %(quiet)s)
        from traces order by project_id, trace_id
        on conflict (project_id, trace_id) do update set
            pending = true,
            pending_since = case when otlp_traces.pending then otlp_traces.pending_since else now() end,
            last_received_at = now(),
            ready_at = greatest(otlp_traces.ready_at, excluded.ready_at),
            conversation_id = coalesce(otlp_traces.conversation_id, excluded.conversation_id)
        returning 1
    )
    select coalesce(sum(spans), 0)::int, (select count(*) from marked)::int from traces
"""


@dataclass
class Landed:
    stored: int
    duplicates: int
    traces: int


async def land(conn: psycopg.AsyncConnection, principal: Principal, rows: list[tuple], quiet_s: float) -> Landed:
    """Store the spans not stored before (one transaction); their traces become pending."""
    project, key = principal.project_id, principal.key_id
    async with conn.transaction():
        cur = conn.cursor()
        await cur.execute(INCOMING)
        async with cur.copy(f"copy otlp_incoming ({COLUMNS}) from stdin") as copy:
            for row in rows:
                await copy.write_row((project, key, *row))
        await cur.execute(LAND, {"key": key, "quiet": quiet_s})
        stored, traces = (await cur.fetchone()) or (0, 0)
    return Landed(stored, len(rows) - stored, traces)


# ---------------------------------------------------------------- assembly


@dataclass
class PendingTrace:
    project_id: uuid.UUID
    trace_id: bytes
    api_key_id: uuid.UUID
    conversation_id: str | None
    pending_since: datetime
    ready: bool


async def anything_due(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("select exists (select 1 from otlp_traces where pending and ready_at <= now())")
    return bool((await cur.fetchone())[0])


CLAIM_DUE = """
    select project_id, trace_id, api_key_id, conversation_id, pending_since
    from otlp_traces
    where pending and ready_at <= now()
    order by ready_at
    limit %(limit)s
    for update skip locked
"""

# Every pending trace of the conversations among the due ones: a conversation is assembled
# only when all of them are ready and this process holds all of them.
CLAIM_CONVERSATIONS = """
    select project_id, trace_id, api_key_id, conversation_id, pending_since, ready_at <= now()
    from otlp_traces
    where pending and (project_id, conversation_id) in (select * from unnest(%(projects)s::uuid[], %(ids)s::text[]))
    order by project_id, trace_id
    for update skip locked
"""
COUNT_CONVERSATIONS = """
    select project_id, conversation_id, count(*)::int
    from otlp_traces
    where pending and (project_id, conversation_id) in (select * from unnest(%(projects)s::uuid[], %(ids)s::text[]))
    group by project_id, conversation_id
"""


async def claim(conn: psycopg.AsyncConnection, limit: int) -> list[PendingTrace]:
    """Lock pending traces whose sessions may be complete (in the caller's transaction): due
    traces without a conversation, and whole conversations whose every pending trace is due
    and could be locked here. Conversations with a trace still receiving spans, or held by
    another process, are left for a later round."""
    cur = await conn.execute(CLAIM_DUE, {"limit": limit})
    due = [PendingTrace(*row, ready=True) for row in await cur.fetchall()]
    claimed = [t for t in due if t.conversation_id is None]
    conversations = sorted({(t.project_id, t.conversation_id) for t in due if t.conversation_id is not None})
    if not conversations:
        return claimed
    params = {"projects": [p for p, _ in conversations], "ids": [i for _, i in conversations]}
    cur = await conn.execute(CLAIM_CONVERSATIONS, params)
    locked: dict[tuple, list[PendingTrace]] = {}
    for row in await cur.fetchall():
        trace = PendingTrace(*row[:5], ready=row[5])
        locked.setdefault((trace.project_id, trace.conversation_id), []).append(trace)
    cur = await conn.execute(COUNT_CONVERSATIONS, params)
    for project, conversation, count in await cur.fetchall():
        traces = locked.get((project, conversation), [])
        if len(traces) == count and all(t.ready for t in traces):
            claimed += traces
    return claimed


# The spans of these traces not read by their previous assembly, with the snapshot this
# statement reads (the next assembly of the same traces skips exactly what this one saw),
# and whether each span's parent is known (stored in any assembly).
LOAD_SPANS = """
    with snapshot as materialized (select pg_current_snapshot() as taken)
    select s.project_id, s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_unix_nano,
           s.end_unix_nano, s.flags, s.status_code, s.status_message, s.conversation_id, s.attributes,
           s.events, s.links, s.resource, s.scope_name, s.scope_version,
           s.parent_span_id is null or exists (
               select 1 from otlp_spans p
               where p.project_id = s.project_id and p.trace_id = s.trace_id and p.span_id = s.parent_span_id
           ) as parent_known,
           (select taken from snapshot)::text
    from unnest(%(projects)s::uuid[], %(traces)s::bytea[]) as wanted (project_id, trace_id)
    join otlp_traces t on t.project_id = wanted.project_id and t.trace_id = wanted.trace_id
    join otlp_spans s on s.project_id = wanted.project_id and s.trace_id = wanted.trace_id
    where t.assembled_snapshot is null
       or not pg_visible_in_snapshot(s.ingest_txid::text::xid8, t.assembled_snapshot)
    order by s.project_id, s.trace_id, s.start_unix_nano, s.span_id
"""

SPAN_FIELDS = (
    "project_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_unix_nano",
    "end_unix_nano",
    "flags",
    "status_code",
    "status_message",
    "conversation_id",
    "attributes",
    "events",
    "links",
    "resource",
    "scope_name",
    "scope_version",
    "parent_known",
)


async def load_spans(conn: psycopg.AsyncConnection, traces: list[PendingTrace]) -> tuple[list[dict[str, Any]], str]:
    """(the traces' new spans as dicts, the snapshot they were read in)."""
    cur = conn.cursor()
    # Attributes are most of what is read: orjson parses them several times faster.
    set_json_loads(orjson.loads, cur)
    await cur.execute(
        LOAD_SPANS, {"projects": [t.project_id for t in traces], "traces": [t.trace_id for t in traces]}
    )
    rows = await cur.fetchall()
    snapshot = rows[0][-1] if rows else (await (await conn.execute("select pg_current_snapshot()::text")).fetchone())[0]
    return [dict(zip(SPAN_FIELDS, row[:-1], strict=True)) for row in rows], snapshot


async def next_segments(conn: psycopg.AsyncConnection, keys: list[tuple[uuid.UUID, str]]) -> dict[tuple, int]:
    """The segment number each session key's next session gets (0 for a key never assembled)."""
    cur = await conn.execute(
        """
        select project_id, session_key, max(segment) + 1
        from otlp_sessions
        where (project_id, session_key) in (select * from unnest(%s::uuid[], %s::text[]))
        group by project_id, session_key
        """,
        ([p for p, _ in keys], [k for _, k in keys]),
    )
    return {(p, k): n for p, k, n in await cur.fetchall()}


@dataclass
class Assembled:
    project_id: uuid.UUID
    session_key: str
    segment: int
    session_id: uuid.UUID
    traces: list[bytes]
    spans: int
    outcome: str  # stored, duplicate, rejected
    problem: str | None = None


async def record(conn: psycopg.AsyncConnection, done: list[Assembled], snapshot: str) -> None:
    """Sessions made (or refused), and their traces no longer pending, as of the snapshot read."""
    if not done:
        return
    cur = conn.cursor()
    await cur.executemany(
        "insert into otlp_sessions (project_id, session_key, segment, session_id, trace_ids, spans, outcome,"
        " problem) values (%s, %s, %s, %s, %s, %s, %s, %s)",
        [(a.project_id, a.session_key, a.segment, a.session_id, a.traces, a.spans, a.outcome, a.problem) for a in done],
    )
    pairs = sorted((a.project_id, t, a.session_id) for a in done for t in a.traces)
    await cur.execute(
        """
        update otlp_traces t set pending = false, assembled_snapshot = %(snapshot)s::pg_snapshot,
               session_id = done.session_id, assembled_at = now()
        from unnest(%(projects)s::uuid[], %(traces)s::bytea[], %(sessions)s::uuid[])
             as done (project_id, trace_id, session_id)
        where t.project_id = done.project_id and t.trace_id = done.trace_id
        """,
        {
            "snapshot": snapshot,
            "projects": [p for p, _, _ in pairs],
            "traces": [t for _, t, _ in pairs],
            "sessions": [s for _, _, s in pairs],
        },
    )


async def defer(conn: psycopg.AsyncConnection, traces: list[PendingTrace], seconds: float) -> None:
    """Look at these traces again later (a span's parent has not arrived yet)."""
    if traces:
        await conn.execute(
            """
            update otlp_traces t set ready_at = now() + make_interval(secs => %(seconds)s)
            from unnest(%(projects)s::uuid[], %(traces)s::bytea[]) as d (project_id, trace_id)
            where t.project_id = d.project_id and t.trace_id = d.trace_id
            """,
            {"seconds": seconds, "projects": [t.project_id for t in traces], "traces": [t.trace_id for t in traces]},
        )
