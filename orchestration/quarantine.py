"""The second line of defence: a batch whose rows make the marts' build fail is set aside, so
one bad row never freezes the marts, detection and alerts for every project.

Validation makes this unreachable for data sent through today's API; rows written by an
older version, by hand or by a bug are what it is for. When a build up to a watermark fails,
``isolate`` looks for the first ingest transaction (one API request: one project's batch) the
build cannot take, by bisection over the transactions in the failing window: each probe is a
real build up to a smaller watermark, so everything before the culprit is built on the way.
The culprit's raw rows keep their data; their ``ingest_txid`` is negated, which puts them below
every reader's window (full refreshes read ``ingest_txid >= 0`` too), and a row in
``quarantined_batches`` says what and why. ``release`` gives them a fresh transaction id, so
the next build takes them again (once the cause is fixed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from orchestration import watermark
from orchestration.dbt import InProcessDbt

log = logging.getLogger("bagula.quarantine")

RAW_TABLES = ("agent_sessions", "session_turns", "llm_calls", "tool_calls")
# A runaway failure (every batch bad: a broken model, not bad rows) stops after this many.
MAX_BATCHES_PER_RUN = 5


@dataclass(frozen=True)
class Quarantined:
    ingest_txid: int
    project_ids: list[str]
    sessions: int
    reason: str


class NotTheData(Exception):
    """The build fails even on a window with no new rows: the fault is not in the data."""


def _txids(conn: psycopg.Connection, lower: int, upper: int) -> list[int]:
    rows = conn.execute(
        "select distinct ingest_txid from agent_sessions where ingest_txid >= %s and ingest_txid < %s order by 1",
        (lower, upper),
    ).fetchall()
    return [r[0] for r in rows]


def _set_aside(conn: psycopg.Connection, txid: int, reason: str) -> Quarantined:
    with conn.transaction():
        projects = [r[0] for r in conn.execute(
            "select distinct project_id::text from agent_sessions where ingest_txid = %s order by 1", (txid,))]
        sessions = conn.execute("select count(*) from agent_sessions where ingest_txid = %s", (txid,)).fetchone()[0]
        for table in RAW_TABLES:
            conn.execute(f"update {table} set ingest_txid = -ingest_txid where ingest_txid = %s", (txid,))
        conn.execute(
            "insert into quarantined_batches (ingest_txid, project_ids, sessions, reason) values (%s, %s, %s, %s)"
            " on conflict (ingest_txid) do update set released_at = null, released_txid = null,"
            " reason = excluded.reason, quarantined_at = now()",
            (txid, projects, sessions, reason[:2000]))
    return Quarantined(txid, projects, sessions, reason)


def isolate(database_url: str, upto: int, build: Callable[[int], tuple[bool, str]]) -> list[Quarantined]:
    """After a failed build up to ``upto``: set aside the ingest transactions the build cannot
    take until a build up to ``upto`` succeeds. ``build(w)`` builds the marts up to watermark
    ``w`` and returns (success, error message). Raises NotTheData when even an empty window fails."""
    found: list[Quarantined] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        while len(found) < MAX_BATCHES_PER_RUN:
            built = watermark.of_marts(conn)
            candidates = _txids(conn, built, upto)
            if not candidates:
                ok, error = build(upto)
                if ok:
                    return found
                raise NotTheData(error)
            ok, error = build(candidates[0])  # nothing new: a data fault cannot fail this
            if not ok:
                raise NotTheData(error)
            lo, hi, reason = 0, len(candidates) - 1, error
            ok, reason = build(candidates[hi] + 1)
            if ok:
                ok, error = build(upto)
                if ok:
                    return found
                reason = error
            else:
                # Invariant: the build up to candidates[lo] works, up to candidates[hi] + 1 fails.
                while lo < hi:
                    mid = (lo + hi) // 2
                    ok, error = build(candidates[mid] + 1)
                    if ok:
                        lo = mid + 1
                    else:
                        hi, reason = mid, error
                quarantined = _set_aside(conn, candidates[lo], reason)
                log.error("quarantined ingest transaction %s (%s sessions of project(s) %s): %s",
                          quarantined.ingest_txid, quarantined.sessions, ", ".join(quarantined.project_ids), reason)
                found.append(quarantined)
                continue
            raise NotTheData(reason)
    return found


def dbt_probes(database_url: str) -> Callable[[int], tuple[bool, str]]:
    """Probes for ``isolate``: the models (no tests) built up to a watermark, in this process,
    the project parsed once for all of them (each probe's bound is a connection setting, not a
    dbt variable, whose change would make dbt parse the project again); (success, what failed)."""
    runner: InProcessDbt | None = None

    def probe(upto: int) -> tuple[bool, str]:
        nonlocal runner
        if runner is None:
            runner = InProcessDbt(database_url, folder="quarantine")
        try:
            runner.run(None, upto)
        except RuntimeError as exc:
            return False, str(exc).removeprefix("dbt run failed: ")
        return True, ""

    return probe


def listed(conn: psycopg.Connection, include_released: bool = False) -> list[dict]:
    rows = conn.execute(
        "select ingest_txid, project_ids::text[], sessions, reason, quarantined_at, released_at"
        " from quarantined_batches where %s or released_at is null order by quarantined_at",
        (include_released,),
    ).fetchall()
    keys = ("ingest_txid", "project_ids", "sessions", "reason", "quarantined_at", "released_at")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def release(conn: psycopg.Connection, txid: int) -> int:
    """Give a quarantined batch's rows a fresh ingest_txid: the next build reads them again.
    Returns the sessions released (0 when nothing is quarantined under that id)."""
    with conn.transaction():
        row = conn.execute("select sessions from quarantined_batches where ingest_txid = %s and released_at is null"
                           " for update", (txid,)).fetchone()
        if row is None:
            return 0
        fresh = conn.execute("select pg_current_xact_id()::text::bigint").fetchone()[0]
        for table in RAW_TABLES:
            conn.execute(f"update {table} set ingest_txid = %s where ingest_txid = %s", (fresh, -txid))
        conn.execute("update quarantined_batches set released_at = now(), released_txid = %s where ingest_txid = %s",
                     (fresh, txid))
    return row[0]


def summary(found: list[Quarantined]) -> str:
    return json.dumps([{"ingest_txid": q.ingest_txid, "projects": q.project_ids, "sessions": q.sessions,
                        "reason": q.reason[:300]} for q in found])
