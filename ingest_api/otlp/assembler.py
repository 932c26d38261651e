"""The assembler: pending traces -> sessions, stored through the SDK's own path.

Every API process runs one, as a background task of its event loop (``BAGULA_OTLP_ASSEMBLER``
turns it off). One round, in one transaction: claim the traces whose session is quiet
(``store.spans.claim``: ``FOR UPDATE SKIP LOCKED``, so any number of processes and replicas
share the work and none waits on another), read their new spans, map each session's spans to
the wire format (``mapping``), validate and encode it exactly like an ingested session, store
it (the ledger claims its deterministic id: a session assembled twice is stored once), and
record the traces as assembled as of the snapshot read. A crash anywhere rolls the whole round
back; the traces stay pending and the next round does it again.

A session whose spans name a parent that has not arrived waits (``ready_at`` moves on by the
quiet period) until ``BAGULA_OTLP_SESSION_MAX_WAIT_S`` after its first pending span, then is
assembled with what is there. A session the wire format refuses (over the structural limits,
say) is recorded as rejected with the reason, and its spans stay in ``otlp_spans``.

Export requests come first: while this process is answering one, the assembler waits before
its next round (up to ``GIVE_WAY_S``), because an exporter whose request is slow drops spans
from its own full queue, while pending traces wait safely in the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingest_api import pricing
from ingest_api.otlp import mapping
from ingest_api.otlp.telemetry import count_sessions
from ingest_api.settings import ApiSettings
from ingest_api.store import sessions as session_store
from ingest_api.store import spans as span_store
from ingest_api.store.keys import Principal
from ingest_api.wire import SessionLimits, validate_session

log = logging.getLogger("bagula.api.otlp")

# The longest the assembler waits for export requests to finish before a round anyway, so
# that sessions keep being assembled under a steady stream of exports.
GIVE_WAY_S = 1.0


class Exports:
    """Export requests in progress in this process (one event loop: no lock needed)."""

    def __init__(self) -> None:
        self.in_progress = 0

    async def give_way(self, longest_s: float = GIVE_WAY_S) -> None:
        """Wait while any export request is in progress, for at most ``longest_s``."""
        deadline = time.monotonic() + longest_s
        while self.in_progress and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
DAY_MS = 86_400_000


def session_limits(settings: ApiSettings) -> SessionLimits:
    """The SDK's limits; the time window was checked span by span at ingest (with a day's slack
    here, for spans held back by a missing parent)."""
    now_ms = time.time() * 1000
    return SessionLimits(
        max_turns=settings.max_turns,
        max_llm_calls=settings.max_llm_calls,
        max_tool_calls=settings.max_tool_calls,
        max_tags=settings.max_tags,
        earliest_ms=now_ms - settings.max_session_age_days * DAY_MS - DAY_MS,
        latest_ms=now_ms + settings.max_session_future_s * 1000 + DAY_MS,
    )


@dataclass
class _Group:
    traces: list[span_store.PendingTrace] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)


@dataclass
class Round:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    deferred: int = 0
    # traces claimed: a full batch means more may be waiting
    claimed: int = 0

    @property
    def sessions(self) -> int:
        return self.stored + self.duplicates + self.rejected


def _problem(errors) -> str:
    shown = "; ".join(f"{e.field or '(session)'}: {e.message}" for e in errors[:5])
    return shown + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else "")


async def assemble_once(conn: psycopg.AsyncConnection, settings: ApiSettings) -> Round:
    """One round (its own transaction on ``conn``): what became of the sessions it looked at."""
    done = Round()
    if not await span_store.anything_due(conn):
        return done
    async with conn.transaction():
        traces = await span_store.claim(conn, settings.otlp_assemble_batch)
        if not traces:
            return done
        rows, snapshot = await span_store.load_spans(conn, traces)
        groups: dict[tuple[uuid.UUID, str], _Group] = {}
        key_of: dict[tuple[uuid.UUID, bytes], tuple[uuid.UUID, str]] = {}
        for trace in traces:
            key = (trace.project_id, mapping.session_key(trace.conversation_id, trace.trace_id))
            key_of[(trace.project_id, trace.trace_id)] = key
            groups.setdefault(key, _Group()).traces.append(trace)
        for row in rows:
            groups[key_of[(row["project_id"], row["trace_id"])]].rows.append(row)

        segments = await span_store.next_segments(conn, list(groups))
        limits = session_limits(settings)
        now = datetime.now(timezone.utc)
        deferred: list[span_store.PendingTrace] = []
        results: list[span_store.Assembled] = []
        encoded: dict[Principal, list[tuple[span_store.Assembled, session_store.EncodedSession]]] = {}
        for (project, key), group in groups.items():
            waited = (now - min(t.pending_since for t in group.traces)).total_seconds()
            views = [mapping.SpanView.of(r) for r in group.rows]
            if not mapping.complete(views) and waited < settings.otlp_session_max_wait_s:
                deferred += group.traces
                continue
            segment = segments.get((project, key), 0)
            first = min(group.traces, key=lambda t: t.trace_id)
            principal = Principal(first.api_key_id, project)
            result = span_store.Assembled(
                project,
                key,
                segment,
                mapping.session_id(project, key, segment),
                sorted(t.trace_id for t in group.traces),
                len(group.rows),
                "stored",
            )
            results.append(result)
            if not group.rows:
                result.outcome, result.problem = "rejected", "no new spans"
                continue
            # Sessions are mapped one by one, each short: requests are served in between.
            await asyncio.sleep(0)
            try:
                # Every value was read back from PostgreSQL (no NUL, valid UTF-8, exact
                # numbers), so the walk over every value (check_values) would find nothing.
                session, errors = validate_session(
                    mapping.build(project, key, segment, group.rows), check_values=False, limits=limits
                )
                if session is None:
                    result.outcome, result.problem = "rejected", _problem(errors)
                    continue
                encoded.setdefault(principal, []).append(
                    (result, session_store.encode(principal, session, settings.max_metadata_bytes))
                )
            except session_store.Unstorable as exc:
                result.outcome, result.problem = "rejected", f"{exc.field}: {exc.message}"
            except Exception as exc:  # noqa: BLE001 - one odd session must not stop the queue
                log.exception("could not map session %s of project %s", key, project)
                result.outcome, result.problem = "rejected", f"mapping failed: {type(exc).__name__}: {exc}"

        for principal, batch in encoded.items():
            existing = await _already_stored(conn, principal.project_id, [e.session_id for _, e in batch])
            outcome = await session_store.ingest(conn, principal, [e for _, e in batch])
            for result, item in batch:
                refused = outcome.refused.get(item.session_id)
                if refused is not None:
                    result.outcome, result.problem = "rejected", refused
                elif item.session_id in existing:
                    result.outcome = "duplicate"
        await span_store.record(conn, results, snapshot)
        await span_store.defer(conn, deferred, settings.otlp_session_quiet_s)

    for result in results:
        if result.outcome == "stored":
            done.stored += 1
        elif result.outcome == "duplicate":
            done.duplicates += 1
        else:
            done.rejected += 1
            log.warning(
                "session %s (%s, segment %d) not stored: %s",
                result.session_id,
                result.session_key,
                result.segment,
                result.problem,
            )
    done.deferred = len({(t.project_id, t.conversation_id or t.trace_id) for t in deferred})
    done.claimed = len(traces)
    for outcome, count in (
        ("stored", done.stored),
        ("duplicate", done.duplicates),
        ("rejected", done.rejected),
        ("deferred", done.deferred),
    ):
        count_sessions(outcome, count)
    return done


async def _already_stored(conn: psycopg.AsyncConnection, project: uuid.UUID, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    cur = await conn.execute(
        "select session_id from session_ledger where project_id = %s and session_id = any(%s)", (project, ids)
    )
    return {row[0] for row in await cur.fetchall()}


class Assembler:
    """The background task: rounds back to back while there is work, else one per interval
    (with jitter, so processes do not poll in step); database outages back off."""

    def __init__(self, pool: AsyncConnectionPool, settings: ApiSettings, exports: Exports | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.exports = exports or Exports()
        self._task: asyncio.Task | None = None

    def start(self) -> "Assembler":
        self._task = asyncio.get_running_loop().create_task(self._run(), name="otlp-assembler")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        # The price table loads in a thread: no request waits for it.
        await asyncio.to_thread(pricing.load)
        interval = self.settings.otlp_assemble_interval_s
        wait = interval
        while True:
            busy = False
            await self.exports.give_way()
            try:
                async with self.pool.connection() as conn:
                    done = await assemble_once(conn, self.settings)
                busy = done.claimed >= self.settings.otlp_assemble_batch
                wait = interval
            except (psycopg.OperationalError, PoolTimeout) as exc:
                log.warning("assembler: database unavailable (%s); retrying in %.0f s", exc, wait)
                wait = min(wait * 2, 30.0)
            except Exception:  # noqa: BLE001 - the loop outlives any one round
                log.exception("assembler round failed; retrying in %.0f s", wait)
                wait = min(wait * 2, 30.0)
            await asyncio.sleep(0 if busy else wait * random.uniform(0.75, 1.25))
