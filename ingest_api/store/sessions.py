"""Writing sessions (bulk, exactly once) and reading them back, always within one project."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg.types.string import BytesBinaryDumper

from ingest_api import pricing, redaction, wire
from ingest_api.paging import encode_cursor
from ingest_api.store.keys import Principal
from ingest_api.wire import Session, epoch_ms, extras, from_epoch_ms

# Claiming ids in one sorted statement makes concurrent overlapping batches
# wait on each other in the same order (no deadlock); the loser gets no row back.
# The ledger also keeps the session's start (migration 0009): the key to its rows in the
# time-partitioned tables.
CLAIM_SQL = """
    insert into session_ledger (project_id, session_id, start_time)
    select %s, id, start_time from unnest(%s::uuid[], %s::timestamptz[]) as u(id, start_time) order by id
    on conflict do nothing
    returning session_id
"""

# Per-agent counts (migration 0009), in the batch's transaction: exact, never a scan of history.
# The shard (the backend's) keeps concurrent batches for one agent off each other's counter row;
# rows are locked in agent order, so two batches cannot deadlock.
COUNT_AGENTS_SQL = """
    insert into agent_session_counts as c (project_id, agent_name, shard, sessions, first_seen, last_seen)
    select %s, agent, pg_backend_pid() %% 16, n, first_seen, last_seen
    from unnest(%s::text[], %s::bigint[], %s::timestamptz[], %s::timestamptz[]) as u(agent, n, first_seen, last_seen)
    order by agent
    on conflict (project_id, agent_name, shard) do update
    set sessions = c.sessions + excluded.sessions,
        first_seen = least(c.first_seen, excluded.first_seen),
        last_seen = greatest(c.last_seen, excluded.last_seen)
"""

# Rows are COPYed in binary: PostgreSQL reads ids, times and numbers without parsing text, and
# the rows are not escaped on the way (bench/ingest.py times both: about half the client's CPU
# and a fifth of the server's for the same rows). Two column types travel as bytes, through
# psycopg's C bytes dumper (its uuid dumper and the bytea one it registers by default are
# Python): a uuid as its 16 bytes, a jsonb as its binary form, a version byte then the JSON text.
AS_BYTES = {"uuid", "jsonb"}


def _columns(*spec: str) -> tuple[str, tuple[str, ...]]:
    """('name type', ...) -> (the COPY column list, the types psycopg dumps them as)."""
    pairs = [item.rsplit(" ", 1) for item in spec]
    return ", ".join(name for name, _ in pairs), tuple("bytea" if kind in AS_BYTES else kind for _, kind in pairs)


SESSION_COLUMNS, SESSION_TYPES = _columns(
    "project_id uuid", "session_id uuid", "api_key_id uuid", "agent_name text", "user_id text",
    "parent_session_id uuid", "start_time timestamptz", "end_time timestamptz", "initial_request text",
    "final_outcome jsonb", "metadata jsonb", "tags text[]", "extra jsonb",
    # the session's own summary (migration 0009): lists read it instead of counting its rows
    "turn_count int4", "llm_call_count int4", "tool_call_count int4", "tool_error_count int4", "tokens_total int8",
    "llm_cost_usd numeric", "llm_calls_from timestamptz", "llm_calls_until timestamptz",
)
TURN_COLUMNS, TURN_TYPES = _columns(
    "project_id uuid", "session_id uuid", "turn_id text", "turn_number int4", '"timestamp" timestamptz',
    "trigger jsonb", "agent_response jsonb", "user_feedback jsonb", "extra jsonb",
)
LLM_COLUMNS, LLM_TYPES = _columns(
    "project_id uuid", "session_id uuid", "turn_id text", "call_id text", "position int4", "provider text",
    "model text", "start_time timestamptz", "end_time timestamptz", "tokens_input int4", "tokens_output int4",
    "tokens_total int4", "cost_usd numeric", "latency_ms float8", "messages jsonb", "response jsonb",
    "extra jsonb", "tokens_cache_read int4", "tokens_cache_write int4", "estimated_cost_usd numeric",
    "price_source text",
)
TOOL_COLUMNS, TOOL_TYPES = _columns(
    "project_id uuid", "session_id uuid", "turn_id text", "tool_id text", "position int4", "tool_name text",
    "arguments jsonb", "start_time timestamptz", "end_time timestamptz", "result jsonb", "error text",
    "latency_ms float8", "extra jsonb",
)
# jsonb's binary format: this version byte, then the JSON text.
JSONB_VERSION = b"\x01"
_SESSION_START = SESSION_COLUMNS.split(", ").index("start_time")
_LLM = {name: i for i, name in enumerate(LLM_COLUMNS.split(", "))}
_TOOL = {name: i for i, name in enumerate(TOOL_COLUMNS.split(", "))}


# orjson's own limit on nesting; deeper JSON cannot be serialised for COPY.
MAX_JSON_DEPTH = 254


class Unstorable(Exception):
    """A value that passed validation but cannot be stored as sent (a session's fault)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def _json(value: Any, path: str) -> bytes | None:
    """A jsonb value in COPY's binary form (None for SQL NULL)."""
    if value is None:
        return None
    try:
        return JSONB_VERSION + orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        deep = wire.too_deep(value, MAX_JSON_DEPTH, path)
        if deep is not None:
            raise Unstorable(deep, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        raise Unstorable(path, f"cannot be stored as JSON: {exc}") from None


def _int4(value: int | None, path: str) -> int | None:
    """A wire count for an int4 column. Validation bounds it already; this is the backstop,
    because psycopg's binary int4 dumper wraps a larger number silently where a text COPY
    would have been refused."""
    if value is not None and not -2_147_483_648 <= value <= wire.INT4_MAX:
        raise Unstorable(path, f"{value} is out of range for a 4-byte integer")
    return value


def _decimal(value: int | float | None) -> Decimal | None:
    """A wire number for a numeric column, exactly as sent (as PostgreSQL reads its text)."""
    return None if value is None else Decimal(repr(value))


def _num(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _cache_tokens(value: Any) -> int | None:
    """metrics.tokensCacheRead / tokensCacheWrite (fields the wire keeps as extras): a count, or None."""
    return value if type(value) is int and 0 <= value <= wire.INT4_MAX else None


def _estimate(call: dict[str, Any], m: dict[str, Any], cache_read: int | None,
              cache_write: int | None) -> tuple[Decimal | None, str | None]:
    """(estimated cost, price table) for a call without the client's cost; (None, None) when it
    has one or the price table does not know its model."""
    if m.get("costUsd") is not None:
        return None, None
    found = pricing.estimate(call["provider"], call["model"], m.get("tokensInput"), m.get("tokensOutput"),
                             cache_read, cache_write, from_epoch_ms(call["startTime"]))
    return (None, None) if found is None else (found.cost_usd, found.source)


@dataclass
class SessionRows:
    """Sessions as rows of the four raw tables, in COPY column order."""

    sessions: list[tuple] = field(default_factory=list)
    turns: list[tuple] = field(default_factory=list)
    llm_calls: list[tuple] = field(default_factory=list)
    tool_calls: list[tuple] = field(default_factory=list)

    def tables(self) -> list[tuple[str, str, tuple[str, ...], list[tuple]]]:
        """(table, COPY column list, binary COPY types, rows) for each raw table."""
        return [
            ("agent_sessions", SESSION_COLUMNS, SESSION_TYPES, self.sessions),
            ("session_turns", TURN_COLUMNS, TURN_TYPES, self.turns),
            ("llm_calls", LLM_COLUMNS, LLM_TYPES, self.llm_calls),
            ("tool_calls", TOOL_COLUMNS, TOOL_TYPES, self.tool_calls),
        ]

    def extend(self, other: "SessionRows") -> None:
        self.sessions += other.sessions
        self.turns += other.turns
        self.llm_calls += other.llm_calls
        self.tool_calls += other.tool_calls


@dataclass
class EncodedSession:
    """One valid session, ready to COPY."""

    session_id: uuid.UUID
    rows: SessionRows


def encode(principal: Principal, s: Session, max_metadata_bytes: int = 65536) -> EncodedSession:
    """The session's rows; Unstorable (naming the field) when a value cannot be stored as sent.
    Done before the batch's transaction, so a bad session costs only itself and no lock waits on it.
    The project's redaction setting (``principal.redactors``) applies first: nothing unredacted is stored."""
    if principal.redactors:
        s = redaction.redact_session(s, principal.redactors)
    project = principal.project_id.bytes
    sid = s["sessionId"].bytes
    parent = s.get("parentSessionId")
    metadata = _json(s.get("metadata"), "metadata")
    if metadata is not None and len(metadata) - len(JSONB_VERSION) > max_metadata_bytes:
        raise Unstorable("metadata", f"at most {max_metadata_bytes} bytes of JSON "
                                     f"(got {len(metadata) - len(JSONB_VERSION)})")
    rows = SessionRows()
    rows.sessions.append((
        project, sid, principal.key_id.bytes, s["agentName"], s.get("userId"),
        parent.bytes if parent else None, from_epoch_ms(s["startTime"]), from_epoch_ms(s.get("endTime")),
        s["initialRequest"], _json(s.get("finalOutcome"), "finalOutcome"), metadata,
        s.get("tags"), _json(extras(s, wire.Session), ""),
    ))
    for t, turn in enumerate(s.get("turns", ())):
        at = f"turns[{t}]"
        turn_id = turn["turnId"]
        response = turn.get("agentResponse")
        stored_response = None
        if response is not None:
            # Tool calls have their own table; the rest of the response stays here.
            stored_response = {"message": response.get("message"), **(extras(response, wire.AgentResponse) or {})}
        rows.turns.append((
            project, sid, turn_id, _int4(turn["turnNumber"], f"{at}.turnNumber"), from_epoch_ms(turn["timestamp"]),
            # trigger is NOT NULL: a JSON null is kept as the JSON value null
            _json(turn["trigger"], f"{at}.trigger") or JSONB_VERSION + b"null", _json(stored_response, f"{at}.agentResponse"),
            _json(turn.get("userFeedback"), f"{at}.userFeedback"), _json(extras(turn, wire.Turn), at),
        ))
        for position, call in enumerate(turn.get("llmCalls", ())):
            here = f"{at}.llmCalls[{position}]"
            m = call.get("metrics") or {}
            extra = extras(call, wire.LlmCall) or {}
            metrics_extra = extras(m, wire.LlmMetrics)
            cache_read = cache_write = None
            if metrics_extra:
                extra["metrics"] = metrics_extra
                cache_read = _cache_tokens(metrics_extra.get("tokensCacheRead"))
                cache_write = _cache_tokens(metrics_extra.get("tokensCacheWrite"))
            rows.llm_calls.append((
                project, sid, turn_id, call["callId"], position, call["provider"],
                call["model"], from_epoch_ms(call["startTime"]), from_epoch_ms(call.get("endTime")),
                _int4(m.get("tokensInput"), f"{here}.metrics.tokensInput"),
                _int4(m.get("tokensOutput"), f"{here}.metrics.tokensOutput"),
                _int4(m.get("tokensTotal"), f"{here}.metrics.tokensTotal"),
                _decimal(m.get("costUsd")), m.get("latencyMs"),
                _json(call.get("messages"), f"{here}.messages"), _json(call.get("response"), f"{here}.response"),
                _json(extra or None, here), cache_read, cache_write, *_estimate(call, m, cache_read, cache_write),
            ))
        for position, tool in enumerate((response or {}).get("toolCalls", ())):
            here = f"{at}.agentResponse.toolCalls[{position}]"
            rows.tool_calls.append((
                project, sid, turn_id, tool["toolId"], position, tool["toolName"],
                _json(tool.get("arguments"), f"{here}.arguments"), from_epoch_ms(tool["startTime"]),
                from_epoch_ms(tool.get("endTime")), _json(tool.get("result"), f"{here}.result"), tool.get("error"),
                tool.get("latencyMs"), _json(extras(tool, wire.ToolCall), here),
            ))
    rows.sessions[0] += _summary(rows)
    return EncodedSession(s["sessionId"], rows)


def _summary(rows: "SessionRows") -> tuple:
    """The summary columns of a session's row, from its other rows: what the session list shows
    (as counting its rows would), and the span of its LLM calls' start times (the only bound a
    read of its calls in the time-partitioned llm_calls has)."""
    tokens = [r[_LLM["tokens_total"]] for r in rows.llm_calls if r[_LLM["tokens_total"]] is not None]
    costs = [r[_LLM["cost_usd"]] for r in rows.llm_calls if r[_LLM["cost_usd"]] is not None]
    starts = [r[_LLM["start_time"]] for r in rows.llm_calls]
    return (
        len(rows.turns), len(rows.llm_calls), len(rows.tool_calls),
        sum(1 for r in rows.tool_calls if r[_TOOL["error"]] is not None),
        sum(tokens) if tokens else None, sum(costs) if costs else None,
        min(starts) if starts else None, max(starts) if starts else None,
    )


def copy_sql(table: str, columns: str) -> str:
    return f"copy {table} ({columns}) from stdin (format binary)"


async def copy_rows(cur: psycopg.AsyncCursor, rows: SessionRows) -> None:
    """COPY rows into the raw tables (the caller holds the transaction)."""
    cur.adapters.register_dumper(bytes, BytesBinaryDumper)  # this cursor only: see AS_BYTES
    for table, columns, types, data in rows.tables():
        if not data:
            continue
        async with cur.copy(copy_sql(table, columns)) as copy:
            copy.set_types(types)
            for row in data:
                await copy.write_row(row)


def copy_rows_sync(cur: psycopg.Cursor, rows: SessionRows) -> None:
    """copy_rows on a synchronous connection (the benches' loaders)."""
    cur.adapters.register_dumper(bytes, BytesBinaryDumper)
    for table, columns, types, data in rows.tables():
        if not data:
            continue
        with cur.copy(copy_sql(table, columns)) as copy:
            copy.set_types(types)
            for row in data:
                copy.write_row(row)


@dataclass
class IngestOutcome:
    stored: int
    duplicates: int
    # session id -> why the database refused it (only when validation missed a fault)
    refused: dict[uuid.UUID, str] = field(default_factory=dict)


async def _write(conn: psycopg.AsyncConnection, principal: Principal, sessions: list[EncodedSession]) -> int:
    async with conn.transaction():
        cur = conn.cursor()
        await cur.execute(CLAIM_SQL, (principal.project_id, [s.session_id for s in sessions],
                                      [s.rows.sessions[0][_SESSION_START] for s in sessions]))
        claimed = {row[0] for row in await cur.fetchall()}
        rows = SessionRows()
        for s in sessions:
            if s.session_id in claimed:
                rows.extend(s.rows)
        await copy_rows(cur, rows)
        if rows.sessions:
            await cur.execute(COUNT_AGENTS_SQL, (principal.project_id, *_agent_counts(rows.sessions)))
    return len(claimed)


def _agent_counts(sessions: list[tuple]) -> tuple[list, list, list, list]:
    """(agents, sessions, first start, last start) of session rows, in agent order."""
    counts: dict[str, list] = {}
    for row in sessions:
        agent, start = row[3], row[6]
        seen = counts.get(agent)
        if seen is None:
            counts[agent] = [1, start, start]
        else:
            seen[0] += 1
            seen[1], seen[2] = min(seen[1], start), max(seen[2], start)
    agents = sorted(counts)
    return agents, [counts[a][0] for a in agents], [counts[a][1] for a in agents], [counts[a][2] for a in agents]


async def ingest(conn: psycopg.AsyncConnection, principal: Principal,
                 sessions: list[EncodedSession]) -> IngestOutcome:
    """Store the sessions not seen before, in one transaction; count the rest as duplicates.

    A resent id (within the batch, from an earlier batch, or from a concurrent
    client) is stored once: the first copy wins.
    """
    unique: dict[uuid.UUID, EncodedSession] = {}
    for s in sessions:
        unique.setdefault(s.session_id, s)
    batch = list(unique.values())
    try:
        stored = await _write(conn, principal, batch)
        return IngestOutcome(stored, len(sessions) - stored)
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError):
        # Validation should make this unreachable. If the database still refuses
        # something, find the culprit one session at a time so the rest land.
        pass
    outcome = IngestOutcome(0, 0)
    for s in batch:
        try:
            outcome.stored += await _write(conn, principal, [s])
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            outcome.refused[s.session_id] = f"database refused the session: {exc.diag.message_primary}"
    outcome.duplicates = len(sessions) - outcome.stored - len(outcome.refused)
    return outcome


# ---------------------------------------------------------------- reads


async def list_agents(conn: psycopg.AsyncConnection, project_id: uuid.UUID) -> list[dict]:
    cur = await conn.execute(
        """
        select agent_name, sum(sessions)::bigint, min(first_seen), max(last_seen)
        from agent_session_counts where project_id = %s
        group by agent_name order by agent_name
        """,
        (project_id,),
    )
    return [
        {"agent_name": name, "session_count": count, "first_seen": first, "last_seen": last}
        for name, count, first, last in await cur.fetchall()
    ]


@dataclass
class SessionFilter:
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None
    user_id: str | None = None
    after: tuple[datetime, uuid.UUID] | None = None
    limit: int = 50


async def list_sessions(
    conn: psycopg.AsyncConnection, project_id: uuid.UUID, agent_name: str, f: SessionFilter
) -> tuple[list[dict], str | None]:
    """A page of session summaries, newest first, and the cursor of the next page."""
    conditions = ["s.project_id = %(project)s", "s.agent_name = %(agent)s"]
    params: dict[str, Any] = {"project": project_id, "agent": agent_name, "limit": f.limit + 1}
    if f.since is not None:
        conditions.append("s.start_time >= %(since)s")
        params["since"] = f.since
    if f.until is not None:
        conditions.append("s.start_time < %(until)s")
        params["until"] = f.until
    if f.status is not None:
        conditions.append("s.status = %(status)s")
        params["status"] = f.status
    if f.user_id is not None:
        conditions.append("s.user_id = %(user)s")
        params["user"] = f.user_id
    if f.after is not None:
        # The plain bound is implied by the keyset's; it is what excludes newer time chunks.
        conditions.append("(s.start_time, s.session_id) < (%(after_time)s, %(after_id)s)")
        conditions.append("s.start_time <= %(after_time)s")
        params["after_time"], params["after_id"] = f.after
    cur = await conn.execute(
        f"""
        select s.session_id, s.agent_name, s.user_id, s.parent_session_id, s.start_time,
               s.end_time, s.status, s.final_outcome -> 'userSatisfaction',
               s.final_outcome -> 'confidence', s.tags,
               coalesce(s.turn_count, t.turns), coalesce(s.llm_call_count, l.calls),
               case when s.turn_count is null then l.tokens else s.tokens_total end,
               case when s.turn_count is null then l.cost else s.llm_cost_usd end,
               coalesce(s.tool_call_count, tc.calls), coalesce(s.tool_error_count, tc.errors)
        from agent_sessions s
        -- Rows stored before migration 0009 have no summary: count theirs (skipped for the rest).
        cross join lateral (
            select count(*) as turns from session_turns t
            where s.turn_count is null and t.project_id = s.project_id and t.session_id = s.session_id
        ) t
        cross join lateral (
            select count(*) as calls, sum(tokens_total) as tokens, sum(cost_usd) as cost
            from llm_calls c
            where s.turn_count is null and c.project_id = s.project_id and c.session_id = s.session_id
        ) l
        cross join lateral (
            select count(*) as calls, count(error) as errors
            from tool_calls c
            where s.turn_count is null and c.project_id = s.project_id and c.session_id = s.session_id
        ) tc
        where {" and ".join(conditions)}
        order by s.start_time desc, s.session_id desc
        limit %(limit)s
        """,
        params,
    )
    rows = await cur.fetchall()
    next_cursor = None
    if len(rows) > f.limit:
        rows = rows[: f.limit]
        next_cursor = encode_cursor(rows[-1][4], rows[-1][0])
    items = [
        {
            "session_id": str(r[0]), "agent_name": r[1], "user_id": r[2],
            "parent_session_id": str(r[3]) if r[3] else None,
            "start_time": r[4], "end_time": r[5], "status": r[6],
            "user_satisfaction": r[7], "confidence": r[8], "tags": r[9],
            "turn_count": r[10], "llm_call_count": r[11], "tokens_total": r[12],
            "total_cost_usd": _num(r[13]) if r[13] is not None else 0,
            "tool_call_count": r[14], "tool_error_count": r[15],
        }
        for r in rows
    ]
    return items, next_cursor


async def get_session(conn: psycopg.AsyncConnection, project_id: uuid.UUID, session_id: uuid.UUID) -> dict | None:
    """The whole session in the wire format it was sent in, or None (also for other projects' ids)."""
    key = {"project": project_id, "session": session_id}
    # agent_sessions is partitioned by start time: the ledger's start keeps the read to one chunk
    # (sessions claimed before migration 0009 have none: every chunk is looked in).
    cur = await conn.execute(
        "select start_time from session_ledger where project_id = %(project)s and session_id = %(session)s", key
    )
    claimed = await cur.fetchone()
    if claimed is None:
        return None
    at = "and start_time = %(start)s" if claimed[0] is not None else ""
    cur = await conn.execute(
        f"""
        select session_id, agent_name, user_id, initial_request, start_time, end_time, metadata,
               tags, parent_session_id, final_outcome, extra, llm_call_count, llm_calls_from, llm_calls_until
        from agent_sessions where project_id = %(project)s and session_id = %(session)s {at}
        """,
        {**key, "start": claimed[0]},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    session = {
        "sessionId": str(row[0]), "agentName": row[1], "userId": row[2],
        "initialRequest": row[3], "startTime": epoch_ms(row[4]), "endTime": epoch_ms(row[5]),
        "metadata": row[6], "tags": row[7],
        "parentSessionId": str(row[8]) if row[8] else None,
        "turns": [], "finalOutcome": row[9], **(row[10] or {}),
    }

    cur = await conn.execute(
        """
        select turn_id, turn_number, "timestamp", trigger, agent_response, user_feedback, extra
        from session_turns where project_id = %(project)s and session_id = %(session)s
        order by turn_number, "timestamp", turn_id
        """,
        key,
    )
    turns: dict[str, dict] = {}
    for turn_id, number, ts, trigger, response, feedback, extra in await cur.fetchall():
        if response is not None:
            response = {**response, "toolCalls": []}
        turns[turn_id] = {
            "turnId": turn_id, "turnNumber": number, "timestamp": epoch_ms(ts), "trigger": trigger,
            "llmCalls": [], "agentResponse": response, "userFeedback": feedback, **(extra or {}),
        }
    session["turns"] = list(turns.values())

    # llm_calls is partitioned by time: the span of the session's calls (migration 0009) keeps
    # the read to the chunks (and compressed batches) that hold them.
    llm_count, calls_from, calls_until = row[11], row[12], row[13]
    span = "and start_time >= %(calls_from)s and start_time <= %(calls_until)s" if calls_from else ""
    calls = []
    if llm_count != 0:  # None: stored before 0009, no summary
        cur = await conn.execute(
            f"""
            select turn_id, call_id, provider, model, start_time, end_time, messages, response,
                   tokens_input, tokens_output, tokens_total, cost_usd, latency_ms, extra
            from llm_calls where project_id = %(project)s and session_id = %(session)s {span}
            order by turn_id, position
            """,
            {**key, "calls_from": calls_from, "calls_until": calls_until},
        )
        calls = await cur.fetchall()
    for r in calls:
        extra = dict(r[13] or {})
        metrics = {
            "tokensInput": r[8], "tokensOutput": r[9], "tokensTotal": r[10],
            "costUsd": _num(r[11]), "latencyMs": _num(r[12]), **extra.pop("metrics", {}),
        }
        turns[r[0]]["llmCalls"].append({
            "callId": r[1], "provider": r[2], "model": r[3], "startTime": epoch_ms(r[4]),
            "endTime": epoch_ms(r[5]), "messages": r[6], "response": r[7], "metrics": metrics, **extra,
        })

    cur = await conn.execute(
        """
        select turn_id, tool_id, tool_name, arguments, start_time, end_time, result, error,
               latency_ms, extra
        from tool_calls where project_id = %(project)s and session_id = %(session)s
        order by turn_id, position
        """,
        key,
    )
    for r in await cur.fetchall():
        turn = turns[r[0]]
        if turn["agentResponse"] is None:
            turn["agentResponse"] = {"message": None, "toolCalls": []}
        turn["agentResponse"]["toolCalls"].append({
            "toolId": r[1], "toolName": r[2], "arguments": r[3], "startTime": epoch_ms(r[4]),
            "endTime": epoch_ms(r[5]), "result": r[6], "error": r[7], "latencyMs": _num(r[8]),
            **(r[9] or {}),
        })
    return session
