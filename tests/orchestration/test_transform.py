"""The dbt marts: numbers checked against values computed here from what was sent,
incremental runs with late data equal a full refresh, and the metrics endpoint."""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone

import polars as pl
import psycopg
import pytest

from ingest_api import db
from ml.schema import SESSION_SCHEMA
from orchestration.dbt import run_dbt, target_dir, transform
from simulator.run import generate
from tests.support.services import ApiServer, new_tenant

START = 1_761_955_200_000  # 2025-11-01T00:00:00Z
DAY = 86_400_000
MARTS = {
    "fct_sessions": "project_id, session_id",
    "fct_llm_calls": "project_id, session_id, call_id",
    "fct_tool_calls": "project_id, session_id, tool_id",
    "agg_agent_cost_hourly": "project_id, agent_name, provider, model, hour",
    "agg_agent_cost_daily": "project_id, agent_name, provider, model, day",
    "agg_agent_latency_hourly": "project_id, agent_name, hour",
    "agg_agent_tool_usage_daily": "project_id, agent_name, tool_name, day",
    "agg_agent_health_hourly": "project_id, agent_name, hour",
}


@pytest.fixture(scope="module")
def warehouse(pg):
    """A database of its own: these tests rebuild the marts, which span every project."""
    url = pg.create_database(f"transform_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    api = ApiServer(url).start()
    yield url, api
    api.stop()


def send(tenant, sessions: list[dict]) -> None:
    for i in range(0, len(sessions), 250):
        response = tenant.client.post("/v1/sessions/ingest", json={"sessions": sessions[i : i + 250]})
        assert response.status_code == 200, response.text


def build(url: str, full_refresh: bool = False) -> None:
    assert transform(url, full_refresh=full_refresh), "dbt build failed"


def rows(url: str, sql: str, params=()) -> list[dict]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(sql, params)
        names = [c.name for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


# ---------------------------------------------------------------- independent expectations


def hour_of(ms: float) -> datetime:
    return datetime.fromtimestamp(ms // 3_600_000 * 3600, tz=timezone.utc)


def day_of(ms: float):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date()


def percentile(values: list[float], fraction: float) -> float | None:
    """percentile_cont: linear interpolation between the closest ranks."""
    if not values:
        return None
    xs = sorted(values)
    position = fraction * (len(xs) - 1)
    low = math.floor(position)
    high = min(low + 1, len(xs) - 1)
    return round(xs[low] + (xs[high] - xs[low]) * (position - low), 3)


def llm_calls(s):
    return [c for t in s["turns"] for c in t["llmCalls"]]


def tool_calls(s):
    return [c for t in s["turns"] for c in (t["agentResponse"] or {}).get("toolCalls", [])]


def close(a, b, tolerance=1e-6) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= tolerance * max(1.0, abs(float(b)))


def test_marts_match_values_computed_from_the_sessions_sent(warehouse):
    url, api = warehouse
    tenant = new_tenant(api, url)
    sessions = [p.session for p in generate(["support", "research", "pipeline"], START, START + 2 * DAY,
                                            seed=21, scale=0.3)]
    send(tenant, sessions)
    build(url)
    scope = (tenant.project_id,)

    # fct_sessions, session by session
    facts = {str(r["session_id"]): r for r in rows(url, "select * from marts.fct_sessions where project_id = %s", scope)}
    assert set(facts) == {s["sessionId"] for s in sessions}
    for s in sessions:
        f = facts[s["sessionId"]]
        calls, tools = llm_calls(s), tool_calls(s)
        assert f["agent_name"] == s["agentName"] and f["turn_count"] == len(s["turns"])
        assert (f["llm_call_count"], f["tool_call_count"]) == (len(calls), len(tools))
        assert f["tool_error_count"] == sum(t["error"] is not None for t in tools)
        assert f["tokens_input"] == sum(c["metrics"]["tokensInput"] for c in calls)
        assert f["tokens_output"] == sum(c["metrics"]["tokensOutput"] for c in calls)
        assert close(f["total_cost_usd"], sum(c["metrics"]["costUsd"] for c in calls))
        assert close(f["duration_ms"], s["endTime"] - s["startTime"])
        assert close(f["llm_latency_ms"], sum(c["metrics"]["latencyMs"] for c in calls))
        assert close(f["tool_latency_ms"], sum(t["latencyMs"] for t in tools))
        assert f["models"] == ",".join(sorted({c["model"] for c in calls}))
        assert f["status"] == s["finalOutcome"]["status"]
        assert close(f["user_satisfaction"], s["finalOutcome"]["userSatisfaction"])
        assert str(f["parent_session_id"] or "") == (s["parentSessionId"] or "")

    # cost per agent, provider, model and hour
    cost = defaultdict(lambda: {"sessions": set(), "llm_calls": 0, "tokens_input": 0, "cost_usd": 0.0})
    for s in sessions:
        for c in llm_calls(s):
            bucket = cost[(s["agentName"], c["provider"], c["model"], hour_of(s["startTime"]))]
            bucket["sessions"].add(s["sessionId"])
            bucket["llm_calls"] += 1
            bucket["tokens_input"] += c["metrics"]["tokensInput"]
            bucket["cost_usd"] += c["metrics"]["costUsd"]
    hourly = rows(url, "select * from marts.agg_agent_cost_hourly where project_id = %s", scope)
    assert len(hourly) == len(cost)
    for r in hourly:
        e = cost[(r["agent_name"], r["provider"], r["model"], r["hour"])]
        assert (r["sessions"], r["llm_calls"], r["tokens_input"]) == (len(e["sessions"]), e["llm_calls"], e["tokens_input"])
        assert close(r["cost_usd"], e["cost_usd"])
    daily = rows(url, "select sum(cost_usd) as c, sum(llm_calls) as n from marts.agg_agent_cost_daily where project_id = %s", scope)
    assert close(daily[0]["c"], sum(e["cost_usd"] for e in cost.values()))
    assert daily[0]["n"] == sum(len(llm_calls(s)) for s in sessions)

    # latency percentiles per agent and hour
    per_hour = defaultdict(list)
    for s in sessions:
        per_hour[(s["agentName"], hour_of(s["startTime"]))].append(s)
    latency = rows(url, "select * from marts.agg_agent_latency_hourly where project_id = %s", scope)
    assert len(latency) == len(per_hour)
    for r in latency:
        group = per_hour[(r["agent_name"], r["hour"])]
        durations = [s["endTime"] - s["startTime"] for s in group]
        llm = [c["metrics"]["latencyMs"] for s in group for c in llm_calls(s)]
        tools = [t["latencyMs"] for s in group for t in tool_calls(s)]
        assert r["sessions"] == len(group)
        for q, suffix in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            assert close(r[f"duration_{suffix}_ms"], percentile(durations, q), 1e-4)
            assert close(r[f"llm_latency_{suffix}_ms"], percentile(llm, q), 1e-4)
            assert close(r[f"tool_latency_{suffix}_ms"], percentile(tools, q), 1e-4)

    # tool usage per agent, tool and day
    usage = rows(url, "select * from marts.agg_agent_tool_usage_daily where project_id = %s", scope)
    assert usage
    for r in usage:
        day_sessions = [s for s in sessions if s["agentName"] == r["agent_name"] and day_of(s["startTime"]) == r["day"]]
        calls = [t for s in day_sessions for t in tool_calls(s) if t["toolName"] == r["tool_name"]]
        using = {s["sessionId"] for s in day_sessions if any(t["toolName"] == r["tool_name"] for t in tool_calls(s))}
        errors = sum(t["error"] is not None for t in calls)
        assert (r["calls"], r["sessions_using"], r["error_count"]) == (len(calls), len(using), errors)
        assert close(r["session_share"], len(using) / len(day_sessions))
        assert close(r["error_rate"], errors / len(calls))
        assert close(r["latency_p95_ms"], percentile([t["latencyMs"] for t in calls], 0.95), 1e-4)
    # ...and, over every day at once, the percentiles the Tool usage dashboard reads from the
    # days' histograms: the nearest rank of all the calls, to within one bucket (2.2 % of 1 + ms)
    merged = rows(url, """
        select agent_name, tool_name, public.bagula_latency_percentile(latency_histogram, 0.95) as p95
        from marts.agg_agent_tool_usage_daily where project_id = %s group by agent_name, tool_name""", scope)
    assert merged
    for r in merged:
        latencies = sorted(t["latencyMs"] for s in sessions if s["agentName"] == r["agent_name"]
                           for t in tool_calls(s) if t["toolName"] == r["tool_name"])
        nearest_rank = latencies[math.ceil(0.95 * len(latencies)) - 1]
        assert 2 ** (-1 / 32) <= (1 + r["p95"]) / (1 + nearest_rank) <= 2 ** (1 / 32), r

    # health per agent and hour
    for r in rows(url, "select * from marts.agg_agent_health_hourly where project_id = %s", scope):
        group = per_hour[(r["agent_name"], r["hour"])]
        assert r["sessions"] == len(group)
        assert close(r["success_rate"], sum(s["finalOutcome"]["status"] == "success" for s in group) / len(group))
        assert close(r["avg_satisfaction"], sum(s["finalOutcome"]["userSatisfaction"] for s in group) / len(group))
        assert close(r["avg_cost_usd"], sum(sum(c["metrics"]["costUsd"] for c in llm_calls(s)) for s in group) / len(group))


def snapshot(url: str) -> dict[str, list]:
    """Every mart, in key order, without the run bookkeeping column."""
    result = {}
    for table, key in MARTS.items():
        data = rows(url, f"select * from marts.{table} order by {key}")
        result[table] = [{k: v for k, v in r.items() if k != "watermark"} for r in data]
    return result


def test_incremental_runs_with_late_data_equal_a_full_refresh(warehouse):
    url, api = warehouse
    tenant = new_tenant(api, url)
    everything = [p.session for p in generate(["support", "pipeline"], START + 5 * DAY, START + 8 * DAY,
                                              seed=22, scale=0.3)]
    rng = random.Random(5)
    late = set(rng.sample(range(len(everything)), len(everything) // 8))
    first_days = [s for i, s in enumerate(everything) if s["startTime"] < START + 7 * DAY and i not in late]
    held_back = [s for i, s in enumerate(everything) if s["startTime"] < START + 7 * DAY and i in late]
    last_day = [s for s in everything if s["startTime"] >= START + 7 * DAY]

    send(tenant, first_days)
    build(url)
    before = rows(url, "select agent_name, hour, sessions, watermark from marts.agg_agent_health_hourly"
                       " where project_id = %s", (tenant.project_id,))
    send(tenant, held_back[: len(held_back) // 2] + last_day[: len(last_day) // 2])  # late and new together
    build(url)
    after = {(r["agent_name"], r["hour"]): r for r in rows(
        url, "select agent_name, hour, sessions, watermark from marts.agg_agent_health_hourly"
             " where project_id = %s", (tenant.project_id,))}
    # Only the hours that received sessions were recomputed; the rest kept their rows.
    touched = {(s["agentName"], hour_of(s["startTime"])) for s in held_back[: len(held_back) // 2] + last_day[: len(last_day) // 2]}
    for r in before:
        key = (r["agent_name"], r["hour"])
        if key not in touched:
            assert after[key] == r
        else:
            assert after[key]["watermark"] > r["watermark"]
    send(tenant, held_back[len(held_back) // 2 :] + last_day[len(last_day) // 2 :])
    build(url)

    incremental = snapshot(url)
    build(url, full_refresh=True)
    refreshed = snapshot(url)
    for table in MARTS:
        for a, b in zip(refreshed[table], incremental[table], strict=True):
            assert a == b, (table, {k: (a[k], b[k]) for k in a if a[k] != b[k]})
    mine = [r for r in incremental["fct_sessions"] if r["project_id"] == tenant.project_id]
    assert len(mine) == len(everything)


def test_a_mart_row_that_breaks_a_column_rule_fails_its_test_naming_the_column(warehouse):
    from dbt.cli.main import dbtRunner

    from orchestration.dbt import dbt_args, dbt_env

    url, api = warehouse
    tenant = new_tenant(api, url)
    send(tenant, [p.session for p in generate(["support"], START + 9 * DAY, START + 9 * DAY + 7_200_000, seed=31,
                                              scale=0.3)])
    build(url)
    [victim] = rows(url, "select session_id, agent_name, tokens_input, turn_count from marts.fct_sessions"
                         " where project_id = %s order by session_id limit 1", (tenant.project_id,))
    with psycopg.connect(url) as conn:
        conn.execute("update marts.fct_sessions set agent_name = null, tokens_input = -5, turn_count = -1"
                     " where project_id = %s and session_id = %s", (tenant.project_id, victim["session_id"]))
    try:
        with pytest.MonkeyPatch.context() as env:
            for name, value in dbt_env(url).items():
                env.setenv(name, value)
            outcome = dbtRunner().invoke(dbt_args(
                "test", "--quiet", "--store-failures", "--select", "fct_sessions,test_name:column_rules",
                "--vars", json.dumps({"watermark": 0, "previous_watermark": 0})))
        assert not outcome.success
        [result] = outcome.result.results
        assert result.failures == 3
        failing = rows(url, f"select column_name, rule, failing_rows from {result.node.relation_name} order by 1, 2")
        assert failing == [
            {"column_name": "agent_name", "rule": "not_null", "failing_rows": 1},
            {"column_name": "tokens_input", "rule": "non_negative", "failing_rows": 1},
            {"column_name": "turn_count", "rule": "non_negative", "failing_rows": 1},
        ]
    finally:
        with psycopg.connect(url) as conn:
            conn.execute("update marts.fct_sessions set agent_name = %s, tokens_input = %s, turn_count = %s"
                         " where project_id = %s and session_id = %s",
                         (victim["agent_name"], victim["tokens_input"], victim["turn_count"], tenant.project_id,
                          victim["session_id"]))


def test_metrics_endpoint_answers_from_the_marts(warehouse):
    url, api = warehouse
    tenant = new_tenant(api, url)
    now = time.time() * 1000
    recent = [p.session for p in generate(["support"], now - 20 * 3_600_000, now - 60_000, seed=23, scale=1.0)]
    older = [p.session for p in generate(["support"], now - 5 * DAY, now - 2 * DAY, seed=24, scale=0.3)]
    send(tenant, recent + older)

    assert tenant.client.get("/v1/agents/customer-support-agent/metrics").status_code in (200, 503)
    build(url)
    metrics = tenant.client.get("/v1/agents/customer-support-agent/metrics", params={"window": "24h"}).json()
    window = [s for s in recent + older if s["startTime"] >= now - 24 * 3_600_000]
    costs = [sum(c["metrics"]["costUsd"] for c in llm_calls(s)) for s in window]
    durations = [s["endTime"] - s["startTime"] for s in window]
    assert metrics["totalSessions"] == len(window)
    assert close(metrics["successRate"], sum(s["finalOutcome"]["status"] == "success" for s in window) / len(window))
    assert close(metrics["totalCostUsd"], sum(costs)) and close(metrics["avgCostUsd"], sum(costs) / len(costs))
    assert close(metrics["avgLatencyMs"], sum(durations) / len(durations))
    assert close(metrics["p95LatencyMs"], percentile(durations, 0.95), 1e-4)
    assert close(metrics["avgSatisfaction"], sum(s["finalOutcome"]["userSatisfaction"] for s in window) / len(window))
    by_model = defaultdict(float)
    for s in window:
        for c in llm_calls(s):
            by_model[c["model"]] += c["metrics"]["costUsd"]
    reported = {m["model"]: m["costUsd"] for m in metrics["costByModel"]}
    assert set(reported) == set(by_model)
    assert all(close(reported[model], cost) for model, cost in by_model.items())

    week = tenant.client.get("/v1/agents/customer-support-agent/metrics", params={"window": "7d"}).json()
    assert week["totalSessions"] == len(recent + older)
    assert tenant.client.get("/v1/agents/customer-support-agent/metrics", params={"window": "2d"}).status_code == 422
    other = new_tenant(api, url)
    assert other.client.get("/v1/agents/customer-support-agent/metrics").json()["totalSessions"] == 0


def test_docs_generate_describes_every_mart_column(warehouse):
    url, _ = warehouse
    build(url)
    assert run_dbt(url, "docs", "generate")
    target = target_dir()
    catalog = json.loads((target / "catalog.json").read_text())
    manifest = json.loads((target / "manifest.json").read_text())
    marts = [n for n in manifest["nodes"].values() if n["resource_type"] == "model" and n["schema"] == "marts"]
    # The incremental marts, the views over detection's verdicts and the frame detection judges;
    # the session detail models, the search index and the projects' names.
    assert {n["name"] for n in marts} == {*MARTS, "fct_anomalies", "fct_regressions", "fct_verdicts",
                                          "detection_sessions", "fct_session_details", "fct_turn_details",
                                          "fct_call_details", "fct_session_links", "session_timeline",
                                          "session_search", "dim_projects", "fct_incidents"}
    for node in marts:
        assert node["description"], node["name"]
        columns = catalog["nodes"][node["unique_id"]]["columns"]
        undocumented = [c for c in columns if not node["columns"].get(c, {}).get("description")]
        assert not undocumented, f"{node['name']}: {undocumented}"

    # The frame detection reads is ml's session contract, column for column and type for type.
    frame = catalog["nodes"]["model.bagula.detection_sessions"]["columns"]
    in_order = sorted(frame.values(), key=lambda c: c["index"])
    assert [c["name"] for c in in_order] == list(SESSION_SCHEMA)
    polars_of = {"uuid": pl.Utf8, "text": pl.Utf8, "character varying": pl.Utf8, "bigint": pl.Int64,
                 "double precision": pl.Float64, "timestamp with time zone": pl.Datetime}
    for column in in_order:
        expected = SESSION_SCHEMA[column["name"]]
        sql_type = column["type"].split("(")[0]
        assert expected.is_(polars_of[sql_type]) or isinstance(expected, polars_of[sql_type]), column
