"""The pipeline under faults: a batch whose rows the marts cannot build is quarantined while
every other project goes on (and is built once released), and a run killed in the middle
of its dbt build is caught up by the next one, with marts equal to a full refresh."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import psycopg
import pytest

from ingest_api import db
from orchestration import watermark
from orchestration.dbt import transform
from simulator.samples import make_batch
from tests.support.cli import bagula
from tests.support.services import ApiServer, new_tenant, post, wait_for

DAY = datetime(2026, 4, 6, tzinfo=timezone.utc)
MARTS = {"fct_sessions": "project_id, session_id", "fct_llm_calls": "project_id, session_id, call_id",
         "fct_tool_calls": "project_id, session_id, tool_id", "agg_agent_cost_daily": "project_id, agent_name, provider, model, day",
         "agg_agent_health_hourly": "project_id, agent_name, hour"}


@pytest.fixture
def warehouse(pg):
    url = pg.create_database(f"faults_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    api = ApiServer(url).start()
    yield url, api
    api.stop()


def sessions_on(seed: int, count: int, hour: int = 9) -> list[dict]:
    start = int(DAY.timestamp() * 1000) + hour * 3_600_000
    return make_batch(random.Random(seed), count, start_ms=start, turns=2)


def scalar(url: str, sql: str, params=()):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchone()[0]


def snapshot(url: str) -> dict[str, list]:
    """Every mart's rows in key order, without the watermark (which differs by build)."""
    result = {}
    with psycopg.connect(url) as conn:
        for table, key in MARTS.items():
            cur = conn.execute(f"select * from marts.{table} order by {key}")
            names = [c.name for c in cur.description]
            result[table] = [{k: v for k, v in zip(names, row, strict=True) if k != "watermark"}
                             for row in cur.fetchall()]
    return result


def pipeline_run(url: str) -> subprocess.CompletedProcess:
    return bagula(url, "pipeline", "run", timeout=300)


def test_a_batch_the_marts_cannot_build_is_quarantined_and_the_rest_goes_on(warehouse):
    url, api = warehouse
    first, second = new_tenant(api, url), new_tenant(api, url)
    assert post(first, sessions_on(1, 5)).status_code == 200
    # A session written past validation (an older version, a bug, by hand), in its own
    # transaction like an API batch: an end time the marts cannot subtract from.
    with psycopg.connect(url) as conn:
        bad_txid = conn.execute("select pg_current_xact_id()::text::bigint").fetchone()[0]
        conn.execute("insert into agent_sessions (project_id, session_id, api_key_id, agent_name, start_time,"
                     " end_time, initial_request) values (%s, gen_random_uuid(), %s, 'broken-agent', %s, 'infinity',"
                     " 'x')", (first.project_id, first.key_id, DAY))
    assert post(second, sessions_on(2, 4, hour=10)).status_code == 200

    run = pipeline_run(url)
    assert run.returncode == 0, run.stdout + run.stderr
    built = {r[0]: r[1] for r in psycopg.connect(url).execute(
        "select project_id, count(*) from marts.fct_sessions group by 1").fetchall()}
    assert built == {first.project_id: 5, second.project_id: 4}, "both projects built, without the bad batch"
    with psycopg.connect(url) as conn:
        assert watermark.judged(conn) == watermark.of_marts(conn), "detection went on too"
    listed = bagula(url, "quarantine", "list").stdout
    assert str(bad_txid) in listed and str(first.project_id) in listed and "cannot subtract infinite" in listed

    # Fixed, then released: the next run builds it, and the marts equal a full refresh.
    with psycopg.connect(url) as conn:
        conn.execute("update agent_sessions set end_time = start_time + interval '1 minute'"
                     " where ingest_txid = %s", (-bad_txid,))
    assert bagula(url, "quarantine", "release", str(bad_txid)).returncode == 0
    assert pipeline_run(url).returncode == 0
    assert scalar(url, "select count(*) from marts.fct_sessions where agent_name = 'broken-agent'") == 1
    assert "nothing quarantined" in bagula(url, "quarantine", "list").stdout
    incremental = snapshot(url)
    assert transform(url, "--quiet", full_refresh=True)
    assert snapshot(url) == incremental


def test_a_run_killed_during_its_build_is_caught_up_by_the_next(warehouse):
    url, api = warehouse
    tenant = new_tenant(api, url)
    for seed in range(3):
        assert post(tenant, sessions_on(10 + seed, 40, hour=8 + seed)).status_code == 200
    env = {**os.environ, "BAGULA_DATABASE_URL": url}
    run = subprocess.Popen([sys.executable, "-m", "bagula", "pipeline", "run"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # Killed once dbt is writing the marts (its connections run the models' SQL).
    building = wait_for(lambda: run.poll() is not None or scalar(
        url, "select count(*) from pg_stat_activity where datname = current_database()"
             " and query ilike '%%marts%%' and state = 'active' and pid <> pg_backend_pid()") > 0,
        timeout=120, interval=0.05)
    assert building and run.poll() is None, "the run ended before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(30)
    time.sleep(0.5)  # the server notices the dead connections and rolls their transactions back

    again = pipeline_run(url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert scalar(url, "select count(*) from marts.fct_sessions where project_id = %s", (tenant.project_id,)) == 120
    with psycopg.connect(url) as conn:
        assert watermark.judged(conn) == watermark.of_marts(conn) > 0
    incremental = snapshot(url)
    assert transform(url, "--quiet", full_refresh=True)
    assert snapshot(url) == incremental
