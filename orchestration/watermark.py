"""Reading the ingest watermark (see docs/architecture.md, "The watermark").

``bagula_watermark()`` in the database is the bound below which every raw row is
committed; each mart row carries the watermark of the build that wrote it, so the marts'
largest stamp is where the next build starts. The sensor's cursor is a watermark too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import psycopg

# Run tags written by the sensor (and `bagula pipeline run`): the watermark the run builds
# up to, and the one the previous run stopped at. Without them (a backfill or a rerun from
# the UI), a run builds the marts up to the current watermark and judges whole days.
RUN_TAG = "bagula/watermark"
PREVIOUS_RUN_TAG = "bagula/previous_watermark"


def current(conn: psycopg.Connection) -> int:
    """The database's watermark now: every raw row with a smaller ingest_txid is committed."""
    return conn.execute("select bagula_watermark()").fetchone()[0]


def of_marts(conn: psycopg.Connection) -> int:
    """The watermark the marts were last built up to (0 before the first build)."""
    if conn.execute("select to_regclass('marts.fct_sessions') is null").fetchone()[0]:
        return 0
    return conn.execute("select coalesce(max(watermark), 0) from marts.fct_sessions").fetchone()[0]


def touched_days(conn: psycopg.Connection, lower: int, upper: int) -> list[date]:
    """UTC days on which the sessions ingested between two watermarks started."""
    rows = conn.execute(
        """
        select distinct (start_time at time zone 'UTC')::date from agent_sessions
        where ingest_txid >= %s and ingest_txid < %s
        order by 1
        """,
        (lower, upper),
    ).fetchall()
    return [r[0] for r in rows]


def session_days(conn: psycopg.Connection) -> list[date]:
    """Every UTC day with at least one session."""
    rows = conn.execute(
        "select distinct (start_time at time zone 'UTC')::date from agent_sessions order by 1"
    ).fetchall()
    return [r[0] for r in rows]


# What detection has judged: the marts watermark up to which every session is judged.
DETECTION = "detection"


def judged(conn: psycopg.Connection) -> int:
    """The marts watermark detection has judged every session up to (0 before the first run)."""
    row = conn.execute("select watermark from pipeline_watermarks where name = %s", (DETECTION,)).fetchone()
    return row[0] if row else 0


def set_judged(conn: psycopg.Connection, upto: int) -> None:
    """Record that every session the marts hold up to ``upto`` is judged (never moves back)."""
    conn.execute(
        """
        insert into pipeline_watermarks (name, watermark) values (%s, %s)
        on conflict (name) do update set watermark = greatest(pipeline_watermarks.watermark, excluded.watermark),
                                         updated_at = now()
        """,
        (DETECTION, upto),
    )


def pending_raw(conn: psycopg.Connection, lower: int, upper: int) -> bool:
    """Whether any session was ingested between two watermarks (the marts have work)."""
    return conn.execute(
        "select exists (select 1 from agent_sessions where ingest_txid >= %s and ingest_txid < %s)",
        (lower, upper),
    ).fetchone()[0]


def bounded_env(env: dict[str, str], upto: int | None) -> dict[str, str]:
    """dbt's environment with every connection of one invocation bounded at the watermark
    ``upto`` (the setting bagula.build_watermark, read by macros/watermark.sql): one bound for
    every model, without a dbt variable, whose change would make dbt re-parse the project."""
    options = env.get("PGOPTIONS", "")
    bound = "" if upto is None else f"-c bagula.build_watermark={int(upto)}"
    return {**env, "PGOPTIONS": f"{options} {bound}".strip()}


# One builder of the marts at a time: the live path and Dagster's runs (incremental models
# built twice at once would read the same raw rows twice).
PIPELINE_LOCK = 0x6261_6775  # "bagu"


@contextmanager
def pipeline_lock(conn: psycopg.Connection, wait: bool = True) -> Iterator[bool]:
    """Hold the pipeline lock on ``conn`` (autocommit) for the block; yields whether it is held
    (always, when ``wait``)."""
    if wait:
        conn.execute("select pg_advisory_lock(%s)", (PIPELINE_LOCK,))
        held = True
    else:
        held = conn.execute("select pg_try_advisory_lock(%s)", (PIPELINE_LOCK,)).fetchone()[0]
    try:
        yield held
    finally:
        if held and not conn.closed:
            conn.execute("select pg_advisory_unlock(%s)", (PIPELINE_LOCK,))


# The live path's heartbeat (live.py): while recent, the sensor leaves new sessions to it.
LIVE = "live"


def beat(conn: psycopg.Connection, name: str) -> None:
    conn.execute(
        "insert into pipeline_watermarks (name, watermark) values (%s, 0)"
        " on conflict (name) do update set updated_at = now()", (name,))


def seconds_since_beat(conn: psycopg.Connection, name: str) -> float | None:
    """Seconds since the heartbeat ``name`` (None: never)."""
    row = conn.execute("select extract(epoch from now() - updated_at)::float8 from pipeline_watermarks"
                       " where name = %s", (name,)).fetchone()
    return row[0] if row else None
