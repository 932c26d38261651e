"""GET /v1/agents/{name}/metrics reads a window's cost by model from the hourly aggregate for
the window's whole hours and from the calls only for its first, partial hour: the figures must be
those of every call whose session started in the window, at the window's edges too. Its session
figures come from an index of fct_sessions alone, never from the table's rows."""

from __future__ import annotations

import json
import random
import subprocess
import time
import uuid
from collections import defaultdict

import psycopg
import pytest

from ingest_api import db
from ingest_api.store.metrics import SESSION_FIGURES_SQL
from orchestration.dbt import build_vars, prepare_marts, run_dbt
from simulator.samples import make_session
from tests.support.services import ApiServer, new_tenant

MINUTE = 60_000
HOUR = 60 * MINUTE


@pytest.fixture(scope="module")
def warehouse(pg):
    """A database of its own: the test builds the marts, which span every project."""
    url = pg.create_database(f"scale_metrics_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    api = ApiServer(url).start()
    yield url, api
    try:
        api.stop()
    except subprocess.TimeoutExpired:  # a loaded machine: stop it the hard way
        api.kill()


@pytest.mark.timeout(900)  # two dbt invocations: minutes on a loaded machine
def test_cost_by_model_counts_every_call_of_the_window_and_none_outside(warehouse):
    url, api = warehouse
    tenant = new_tenant(api, url)
    rng = random.Random(5)
    now = int(time.time() * 1000)
    edge = now - 24 * HOUR
    starts = (
        # Every 20 s around the 24h window's edge: whenever the request comes (the build takes a
        # while), some sessions fall just outside the window and some in its first, partial hour.
        [edge - 2 * MINUTE + i * 20_000 for i in range(40)]
        + [edge + h * HOUR + rng.randrange(HOUR) for h in range(1, 23)]  # whole hours
        + [now - 5 * MINUTE, now - 10 * MINUTE]  # the current hour
        + [now - 3 * 24 * HOUR, now - 8 * 24 * HOUR]  # in the week only; in none
    )
    sessions = [make_session(rng, agent_name="metered", start_ms=t, turns=2) for t in starts]
    response = tenant.client.post("/v1/sessions/ingest", json={"sessions": sessions})
    assert response.status_code == 200, response.text
    # The models as the platform's runs build them (their data tests are not this test's subject).
    assert prepare_marts(url)
    assert run_dbt(
        url,
        "run",
        "--quiet",
        "--vars",
        json.dumps(build_vars(url)),
        "--select",
        "+fct_sessions",
        "+agg_agent_cost_hourly",
    ), "dbt run failed"

    for window in ("24h", "7d", "1h"):
        got = tenant.client.get("/v1/agents/metered/metrics", params={"window": window}).json()
        expected: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
        for s in sessions:
            if s["startTime"] >= got["from"]:
                for turn in s["turns"]:
                    for call in turn["llmCalls"]:
                        expected[(call["model"], call["provider"])][0] += 1
                        expected[(call["model"], call["provider"])][1] += call["metrics"]["costUsd"]
        reported = {(m["model"], m["provider"]): [m["llmCalls"], m["costUsd"]] for m in got["costByModel"]}
        assert set(reported) == set(expected), window
        for key, (calls, cost) in expected.items():
            assert reported[key][0] == calls, (window, key)
            assert reported[key][1] == pytest.approx(cost, rel=1e-9), (window, key)

    # The session figures can come from the agent's index alone: it leads with the query's
    # filter and holds every column the query reads, so a week of a busy agent is as many index
    # entries (an index-only scan), not as many table rows.
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            """
            select array(select a.attname from unnest(i.indkey) with ordinality k(attnum, n)
                         join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum order by k.n)
            from pg_index i where i.indrelid = 'marts.fct_sessions'::regclass
            """
        ).fetchall()
        read = {"is_success", "total_cost_usd", "duration_ms", "user_satisfaction", "started_at"}
        assert any(columns[:3] == ["project_id", "agent_name", "started_at"] and read <= set(columns)
                   for (columns,) in indexes), indexes
        assert all(column in SESSION_FIGURES_SQL for column in read)
        # ... and autovacuum marks new rows visible after 0.5 % new rows, not the default 20 %.
        options = conn.execute("select reloptions from pg_class where oid = 'marts.fct_sessions'::regclass").fetchone()
        assert "autovacuum_vacuum_insert_scale_factor=0.005" in options[0]
