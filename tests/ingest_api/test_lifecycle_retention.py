"""Retention: per project, raw payloads, the marts' figures and verdicts go when they are past
their time, batch by batch; what is younger stays, and the marts' aggregates of the periods
they keep are exactly what they were (also after the next build). On plain PostgreSQL and on
TimescaleDB (hypertables, compressed chunks); storage per session with and without compression."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from bagula.cli.retention import start_periodic
from ingest_api import db
from ingest_api.paging import decode_cursor
from ingest_api.settings import get_api_settings
from ingest_api.store import keys
from ingest_api.store import retention as store
from ingest_api.store import sessions as session_store
from ingest_api.store.keys import Principal
from ingest_api.wire import validate_session
from simulator.samples import make_batch
from tests.support.cli import bagula
from tests.support.services import wait_for

pytestmark = pytest.mark.timeout(1800)
DAY_MS = 86_400_000
AGES = (300, 200, 100, 70, 40, 10, 1)  # days
MODELS_ONLY = ("--exclude-resource-type", "test", "--exclude-resource-type", "unit_test")
# What `bagula retention set` gives the short-lived project; the other keeps the defaults.
SHORT = {"raw": 20, "marts": 60, "verdicts": 60}
DEFAULT = {"raw": 90, "marts": 395, "verdicts": 395}
AGGREGATES = (
    "agg_agent_cost_daily",
    "agg_agent_cost_hourly",
    "agg_agent_health_hourly",
    "agg_agent_latency_hourly",
    "agg_agent_tool_usage_daily",
)


def load(url: str, principal: Principal, sessions: list[dict]) -> None:
    encoded = [session_store.encode(principal, validate_session(s, check_values=False)[0]) for s in sessions]

    async def write() -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            for i in range(0, len(encoded), 500):
                await session_store.ingest(conn, principal, encoded[i : i + 500])

    asyncio.run(write())


def new_project(url: str, name: str) -> Principal:
    with psycopg.connect(url) as conn:
        made = keys.create_key(conn, name)
    return Principal(made.key_id, made.project_id)


def built(url: str) -> None:
    result = bagula(url, "transform", *MODELS_ONLY, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def ages(url: str, table: str, column: str, project_id, now: datetime) -> list[int]:
    """The distinct ages, in whole days, of the project's rows."""
    # A day bucket counts in calendar days; times to the nearest day (a session's rows are minutes apart).
    age = (
        "((%s at time zone 'UTC')::date - day)"
        if column == "day"
        else f"round(extract(epoch from %s - {column}::timestamptz) / 86400)::int"
    )
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select distinct {age} from {table} where project_id = %s order by 1 desc", (now, project_id)
        ).fetchall()
    return [r[0] for r in rows]


def aggregates(url: str, project_id, before: datetime, since: datetime | None = None) -> dict[str, list[tuple]]:
    """Every aggregate row of the project for buckets in [since, before) (watermark aside)."""
    found = {}
    with psycopg.connect(url) as conn:
        for table in AGGREGATES:
            columns = [
                r[0]
                for r in conn.execute(
                    "select column_name from information_schema.columns where table_schema = 'marts'"
                    " and table_name = %s and column_name <> 'watermark' order by ordinal_position",
                    (table,),
                ).fetchall()
            ]
            bucket = "hour" if "hour" in columns else "day"
            found[table] = conn.execute(
                f"select {', '.join(columns)} from marts.{table} where project_id = %s and {bucket} < %s"
                f" and {bucket} >= coalesce(%s::timestamptz, '-infinity') order by {', '.join(columns)}",
                (project_id, before, since),
            ).fetchall()
    return found


@pytest.fixture(scope="module", params=["plain", pytest.param("timescaledb", marks=pytest.mark.timescaledb)])
def platform(request, pg) -> Iterator[dict]:
    mode = request.param
    url = pg.create_database(f"retention_{mode}_{uuid.uuid4().hex[:8]}")
    db.upgrade(url, timescaledb="off" if mode == "plain" else "auto")
    if mode == "timescaledb" and not db.hypertables(url):
        pytest.skip(f"TimescaleDB is not usable on this server ({db.timescaledb_status(url)})")
    assert bool(db.hypertables(url)) == (mode == "timescaledb")
    now = datetime.now(timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    rng = random.Random(90)
    projects = {
        "short": new_project(url, f"short-{uuid.uuid4().hex[:6]}"),
        "long": new_project(url, f"long-{uuid.uuid4().hex[:6]}"),
    }
    for principal in projects.values():
        load(url, principal, [s for age in AGES for s in make_batch(rng, 2, start_ms=now_ms - age * DAY_MS)])
    with psycopg.connect(url) as conn:
        for principal in projects.values():
            # A verdict per session, and spans of every age.
            conn.execute(
                "insert into anomalies (project_id, session_id, agent_name, anomaly_type, severity, details,"
                " session_started_at) select project_id, session_id, agent_name, 'cost_spike', 'minor', '{}',"
                " start_time from agent_sessions where project_id = %s",
                (principal.project_id,),
            )
            for age in AGES:
                start_ns = (now_ms - age * DAY_MS) * 1_000_000
                conn.execute(
                    "insert into otlp_spans (project_id, trace_id, span_id, api_key_id, name, kind, start_unix_nano,"
                    " end_unix_nano, flags, status_code, attributes) values (%s, %s, %s, %s, 'chat', 3, %s, %s, 0,"
                    " 0, '{}')",
                    (
                        principal.project_id,
                        uuid.uuid4().bytes,
                        uuid.uuid4().bytes[:8],
                        principal.key_id,
                        start_ns,
                        start_ns + 1_000_000,
                    ),
                )
    built(url)
    if mode == "timescaledb":
        with psycopg.connect(url, autocommit=True) as conn:
            # The compression policy's job, run now: every chunk older than 7 days is compressed.
            for (job,) in conn.execute(
                "select job_id from timescaledb_information.jobs where proc_name = 'policy_compression'"
            ).fetchall():
                conn.execute("call run_job(%s)", (job,))
            compressed = conn.execute(
                "select count(*) from timescaledb_information.chunks where is_compressed"
            ).fetchone()[0]
        assert compressed > 0
    yield {"url": url, "mode": mode, "now": now, "projects": projects}


def test_old_data_goes_recent_stays_and_kept_aggregates_do_not_change(platform):
    url, now, projects = platform["url"], platform["now"], platform["projects"]
    short, long = projects["short"].project_id, projects["long"].project_id
    with psycopg.connect(url) as conn:
        short_name = conn.execute("select name from projects where project_id = %s", (short,)).fetchone()[0]
    recent = now - timedelta(days=2)
    kept_short = aggregates(url, short, recent, since=now - timedelta(days=SHORT["marts"]))
    assert all(kept_short.values()) and aggregates(url, short, recent) != kept_short
    kept_long = aggregates(url, long, recent)
    # Both projects have aggregates of every age before retention.
    assert ages(url, "marts.agg_agent_health_hourly", "hour", long, now) == list(AGES)

    changed = bagula(
        url,
        "retention",
        "set",
        "--project",
        short_name,
        "--raw-days",
        str(SHORT["raw"]),
        "--marts-days",
        str(SHORT["marts"]),
        "--verdicts-days",
        str(SHORT["verdicts"]),
    )
    assert changed.returncode == 0, changed.stderr
    assert f"raw payloads {SHORT['raw']} d, marts {SHORT['marts']} d" in changed.stdout
    with psycopg.connect(url, autocommit=True) as conn:
        if platform["mode"] == "timescaledb":
            # Deleting one project's rows from chunks compressed with the other's decompresses
            # them: past TimescaleDB's limit (100,000 rows a transaction by default; 1 here),
            # retention would stop there.
            conn.execute(f"alter database {conn.info.dbname} set timescaledb.max_tuples_decompressed_per_dml_transaction = 1")
    try:
        applied = bagula(url, "retention", "apply")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"alter database {conn.info.dbname} reset timescaledb.max_tuples_decompressed_per_dml_transaction")
    assert applied.returncode == 0, applied.stderr
    assert "kept whole" not in applied.stderr  # every mart table has a time column retention knows

    for project, policy in ((short, SHORT), (long, DEFAULT)):
        raw = [a for a in AGES if a < policy["raw"]]
        marts = [a for a in AGES if a < policy["marts"]]
        for table, column in (
            ("agent_sessions", "start_time"),
            ("session_turns", '"timestamp"'),
            ("llm_calls", "start_time"),
            ("tool_calls", "start_time"),
            ("otlp_spans", "start_time"),
            ("marts.session_search", "started_at"),
            ("marts.fct_session_details", "started_at"),
            ("marts.fct_call_details", "session_started_at"),
        ):
            assert ages(url, table, column, project, now) == raw, (table, policy)
        for table, column in (
            ("marts.fct_sessions", "started_at"),
            ("marts.fct_llm_calls", "session_started_at"),
            ("marts.agg_agent_health_hourly", "hour"),
            ("marts.agg_agent_cost_daily", "day"),
        ):
            assert ages(url, table, column, project, now) == marts, (table, policy)
        assert ages(url, "anomalies", "session_started_at", project, now) == [a for a in AGES if a < policy["verdicts"]]
    with psycopg.connect(url) as conn:
        if conn.execute("select to_regclass('agent_session_counts') is not null").fetchone()[0]:
            # The per-agent counts (migration 0009) follow the deleted sessions.
            for project, policy in ((short, SHORT), (long, DEFAULT)):
                counted = conn.execute(
                    "select sum(sessions) from agent_session_counts where project_id = %s", (project,)
                ).fetchone()[0]
                assert counted == 2 * len([a for a in AGES if a < policy["raw"]])
    # The figures of the kept periods are those of before, row for row; the older ones are gone.
    assert aggregates(url, long, recent) == kept_long
    assert aggregates(url, short, recent) == kept_short

    # The next build, with a new session today, leaves the kept periods as they are.
    load(url, projects["long"], make_batch(random.Random(1), 1, start_ms=int(now.timestamp() * 1000) - 3_600_000))
    built(url)
    assert aggregates(url, long, recent) == kept_long
    assert aggregates(url, short, recent) == kept_short

    with psycopg.connect(url) as conn:
        started, finished, deleted = conn.execute(
            "select started_at, finished_at, rows_deleted from retention_runs order by run_id desc"
        ).fetchone()
    assert finished >= started and deleted["agent_sessions"] == 2 * (5 + 3)  # short: 5 ages, long: 3
    assert deleted["marts.fct_sessions"] == 2 * 4  # short's 300, 200, 100 and 70 days
    if platform["mode"] == "timescaledb":
        assert "agent_sessions chunks dropped" in deleted


def test_retention_show_and_the_data_policy_defaults(platform):
    shown = bagula(platform["url"], "retention", "show")
    assert shown.returncode == 0, shown.stderr
    assert f"raw payloads {SHORT['raw']} d, marts {SHORT['marts']} d, verdicts {SHORT['verdicts']} d" in shown.stdout
    assert "raw payloads 90 d (default), marts 395 d (default)" in shown.stdout
    assert "last run" in shown.stdout
    unset = bagula(platform["url"], "retention", "set", "--project", "no-such-project", "--raw-days", "5")
    assert unset.returncode != 0 and "no project named" in unset.stderr
    with psycopg.connect(platform["url"], autocommit=True) as conn:
        assert store.apply_if_due(conn, store.Defaults(), every_s=3600) is None  # it ran a moment ago
        with pytest.raises(ValueError):
            store.set_policy(conn, platform["projects"]["short"].project_id, raw_days=0)


def test_erasing_sessions_in_compressed_chunks_is_not_stopped_by_timescaledbs_decompression_limit(platform):
    # TimescaleDB decompresses the rows a DELETE touches in compressed chunks, and refuses past
    # timescaledb.max_tuples_decompressed_per_dml_transaction (100,000 by default; a user's
    # sessions over months at a million sessions passed it). Here the limit is 1.
    url, long = platform["url"], platform["projects"]["long"].project_id
    with psycopg.connect(url, autocommit=True) as conn:
        if platform["mode"] == "timescaledb":
            conn.execute(f"alter database {conn.info.dbname} set timescaledb.max_tuples_decompressed_per_dml_transaction = 1")
        name = conn.execute("select name from projects where project_id = %s", (long,)).fetchone()[0]
        session_id, calls = conn.execute(
            "select session_id, llm_call_count from agent_sessions where project_id = %s"
            " and start_time < now() - interval '30 days' order by start_time desc limit 1",
            (long,),
        ).fetchone()
        before = conn.execute("select count(*) from llm_calls where project_id = %s", (long,)).fetchone()[0]
    try:
        erased = bagula(url, "erase", "session", "--project", name, str(session_id))
        assert erased.returncode == 0, erased.stderr[-2000:]
        with psycopg.connect(url) as conn:
            assert not conn.execute("select 1 from agent_sessions where session_id = %s", (session_id,)).fetchall()
            assert not conn.execute("select 1 from llm_calls where session_id = %s", (session_id,)).fetchall()
            after = conn.execute("select count(*) from llm_calls where project_id = %s", (long,)).fetchone()[0]
        assert calls > 0 and after == before - calls  # its calls, and no other
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"alter database {conn.info.dbname} reset timescaledb.max_tuples_decompressed_per_dml_transaction")


@pytest.mark.timescaledb
def test_storage_per_session_with_and_without_compression(pg):
    """Figures for the README (printed): the raw tables' bytes per session before and after the
    compression policy compresses the chunks, and the same answers from both."""
    url = pg.create_database(f"compression_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    if not db.hypertables(url):
        pytest.skip(f"TimescaleDB is not usable on this server ({db.timescaledb_status(url)})")
    principal = new_project(url, "storage")
    count = 2000
    start_ms = int((datetime.now(timezone.utc) - timedelta(days=30)).timestamp() * 1000)
    load(url, principal, make_batch(random.Random(5), count, start_ms=start_ms))
    sizes = """
        select hypertable_size('agent_sessions'), hypertable_size('llm_calls'),
               pg_total_relation_size('session_turns'), pg_total_relation_size('tool_calls')
    """
    answers = """
        select count(*), sum(tokens_total), sum(cost_usd), md5(string_agg(messages::text, '' order by session_id, call_id))
        from llm_calls where project_id = %(p)s
        union all
        select count(*), null, null, md5(string_agg(initial_request || final_outcome::text, '' order by session_id))
        from agent_sessions where project_id = %(p)s
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")
        before = conn.execute(sizes).fetchone()
        expected = conn.execute(answers, {"p": principal.project_id}).fetchall()
        for (job,) in conn.execute(
            "select job_id from timescaledb_information.jobs where proc_name = 'policy_compression'"
        ).fetchall():
            conn.execute("call run_job(%s)", (job,))
        conn.execute("vacuum analyze")
        after = conn.execute(sizes).fetchone()
        assert conn.execute(answers, {"p": principal.project_id}).fetchall() == expected
        # Retention deletes from compressed chunks too.
        store.set_policy(conn, principal.project_id, raw_days=20)
        run = store.apply(conn, store.Defaults())
        assert run.rows_deleted["agent_sessions"] == count
        assert conn.execute("select count(*) from llm_calls").fetchone()[0] == 0
    hyper_before, hyper_after = before[0] + before[1], after[0] + after[1]
    print(
        f"\nstorage per session ({count} sessions of 5 turns, 5 LLM calls, 5 tool calls):"
        f"\n  hypertables (sessions, LLM calls): {hyper_before / count:,.0f} B uncompressed,"
        f" {hyper_after / count:,.0f} B compressed ({hyper_before / hyper_after:.1f}x)"
        f"\n  all raw tables: {sum(before) / count:,.0f} B uncompressed, {sum(after) / count:,.0f} B with the"
        f" hypertables compressed"
    )
    assert hyper_after < hyper_before / 2


@pytest.mark.timescaledb
def test_sessions_compressed_before_the_page_order_migration_are_compressed_again_in_page_order(pg):
    """Migration 0012: every compressed chunk of agent_sessions ends up ordered as the session
    list pages (start time, then session id, newest first; ingest_txid kept for the marts), with
    the same rows, and the list still pages through them in that order."""
    from alembic import command

    url = pg.create_database(f"page_order_{uuid.uuid4().hex[:8]}")
    command.upgrade(db.alembic_config(url), "0011")
    if not db.hypertables(url):
        pytest.skip(f"TimescaleDB is not usable on this server ({db.timescaledb_status(url)})")
    principal = new_project(url, "page-order")
    start_ms = int((datetime.now(timezone.utc) - timedelta(days=30)).timestamp() * 1000)
    sessions = make_batch(random.Random(12), 300, start_ms=start_ms)
    for i, s in enumerate(sessions):  # many sessions a second apart: ties broken by session id
        s["startTime"] = start_ms + (i // 3) * 1000
    load(url, principal, sessions)
    orders = """
        select distinct orderby from timescaledb_information.chunk_compression_settings
        where hypertable = 'agent_sessions'::regclass
    """
    rows = "select session_id, start_time, agent_name, ingest_txid, md5(initial_request) from agent_sessions order by 1"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select compress_chunk(c) from show_chunks('agent_sessions') c")
        assert conn.execute(orders).fetchall() == [("start_time DESC,ingest_txid",)]
        before = conn.execute(rows).fetchall()
    db.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(orders).fetchall() == [("start_time DESC,session_id DESC,ingest_txid",)]
        assert conn.execute("select count(*) from timescaledb_information.chunks"
                            " where hypertable_name = 'agent_sessions' and not is_compressed").fetchone()[0] == 0
        assert conn.execute(rows).fetchall() == before

    async def every_page() -> list[str]:
        seen, after = [], None
        async with await psycopg.AsyncConnection.connect(url) as conn:
            while True:
                page, cursor = await session_store.list_sessions(
                    conn, principal.project_id, agent,
                    session_store.SessionFilter(after=after, limit=37))
                seen += [item["session_id"] for item in page]
                if cursor is None:
                    return seen
                after = decode_cursor(cursor)

    agent = sessions[0]["agentName"]
    newest_first = sorted(((start, str(sid)) for sid, start, name, _, _ in before if name == agent), reverse=True)
    assert len(newest_first) > 100
    assert asyncio.run(every_page()) == [sid for _, sid in newest_first]


def test_the_live_paths_retention_thread_applies_retention_when_due(pg, monkeypatch):
    """`bagula pipeline live` starts this thread: it applies retention once the last run is older
    than BAGULA_RETENTION_EVERY_S, and stops with the live path."""
    url = pg.create_database(f"retention_live_{uuid.uuid4().hex[:8]}")
    db.upgrade(url, timescaledb="off")
    principal = new_project(url, "live")
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    load(url, principal, make_batch(random.Random(2), 2, start_ms=now_ms - 100 * DAY_MS))
    load(url, principal, make_batch(random.Random(3), 2, start_ms=now_ms - DAY_MS))
    monkeypatch.setenv("BAGULA_RETENTION_EVERY_S", "3600")
    get_api_settings.cache_clear()
    stop = threading.Event()
    thread = start_periodic(url, stop)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            # Finished, not only started: the run's row exists (finished_at null) while it deletes.
            wait_for(lambda: conn.execute("select count(finished_at) from retention_runs").fetchone()[0], timeout=120)
            assert conn.execute("select count(*) from agent_sessions").fetchone()[0] == 2
    finally:
        stop.set()
        thread.join(timeout=120)
        get_api_settings.cache_clear()
    assert not thread.is_alive()
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from retention_runs").fetchone()[0] == 1  # not again within the hour
