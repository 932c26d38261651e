"""Whatever passes validation fits the pipeline: sessions generated from the wire schema,
extremes included, go through the API, `bagula transform` (dbt build with its tests) and
detection, every step succeeds, and the marts' sums equal the sums of what was sent."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from ingest_api import db
from orchestration.dbt import transform
from orchestration.detection.detect import detect_days
from tests.support.services import ApiServer, new_tenant, post

INT4_MAX = 2**31 - 1
START = datetime(2026, 5, 4, tzinfo=timezone.utc)
START_MS = int(START.timestamp() * 1000)
DAY_MS = 86_400_000

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
name = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF, blacklist_categories=("Cs",)),
               min_size=1, max_size=20)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                           | st.floats(allow_nan=False, allow_infinity=False) | text,
                           lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
                           max_leaves=8)
tokens = st.integers(0, INT4_MAX) | st.sampled_from([0, 1, INT4_MAX])
costs = (st.floats(0, 1e9, allow_nan=False) | st.sampled_from([0.0, 1e-12, 1e9])).map(lambda c: c)
millis = st.floats(0, 1e7, allow_nan=False)


@st.composite
def sessions(draw) -> dict:
    start = draw(st.integers(START_MS, START_MS + 2 * DAY_MS))
    t = start
    turns = []
    for n in range(draw(st.integers(0, 3))):
        calls = []
        for c in range(draw(st.integers(0, 3))):
            latency = draw(millis)
            metrics = {"tokensInput": draw(tokens), "tokensOutput": draw(tokens), "costUsd": draw(costs),
                       "latencyMs": latency}
            if draw(st.booleans()):
                metrics["tokensTotal"] = draw(tokens)
            calls.append({"callId": f"c{n}-{c}", "provider": draw(name), "model": draw(name), "startTime": t,
                          "endTime": t + latency, "messages": draw(json_values), "response": draw(json_values),
                          "metrics": metrics})
        tools = [{"toolId": f"t{n}-{k}", "toolName": draw(name), "arguments": draw(json_values), "startTime": t,
                  "endTime": t + draw(millis), "result": draw(json_values),
                  "error": draw(st.none() | text), "latencyMs": draw(st.none() | millis)}
                 for k in range(draw(st.integers(0, 3)))]
        turns.append({"turnId": f"turn-{n}", "turnNumber": draw(st.integers(0, INT4_MAX)), "timestamp": t,
                      "trigger": draw(json_values), "llmCalls": calls,
                      "agentResponse": {"message": draw(json_values), "toolCalls": tools}})
        t += draw(st.integers(0, 60_000))
    return {
        "sessionId": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        "agentName": draw(st.sampled_from(["agent-a", "agent-b"])), "userId": draw(st.none() | name),
        "initialRequest": draw(text), "startTime": start, "endTime": draw(st.none() | st.just(t)),
        "metadata": draw(st.none() | st.dictionaries(text, json_values, max_size=3)),
        "tags": draw(st.none() | st.lists(name, max_size=3)), "turns": turns,
        "finalOutcome": draw(st.none() | st.fixed_dictionaries({
            "status": st.sampled_from(["success", "failure", "error"]),
            "userSatisfaction": st.none() | st.floats(1, 5), "confidence": st.none() | st.floats(0, 1)})),
    }


@pytest.fixture(scope="module")
def pipeline(pg):
    url = pg.create_database(f"properties_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    api = ApiServer(url).start()
    yield url, api
    api.stop()


def _llm_calls(batch: list[dict]) -> list[dict]:
    return [c for s in batch for t in s["turns"] for c in t["llmCalls"]]


def _overflowing() -> list[dict]:
    """The session that once froze the marts for every project: 2^31 - 1 + 1 tokens."""
    session = {"sessionId": str(uuid.uuid4()), "agentName": "agent-a", "initialRequest": "x", "startTime": START_MS,
               "turns": [{"turnId": "t", "turnNumber": 1, "timestamp": START_MS, "trigger": None, "llmCalls": [
                   {"callId": "c", "provider": "p", "model": "m", "startTime": START_MS,
                    "metrics": {"tokensInput": INT4_MAX, "tokensOutput": 1}}]}]}
    return [session]


@settings(max_examples=5, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(batch=st.lists(sessions(), min_size=1, max_size=12, unique_by=lambda s: s["sessionId"]))
@example(batch=_overflowing())
def test_any_valid_session_goes_through_marts_and_detection_with_exact_sums(pipeline, batch):
    url, api = pipeline
    tenant = new_tenant(api, url)
    answer = post(tenant, batch)
    assert answer.status_code == 200 and answer.json()["stored"] == len(batch), answer.text
    assert transform(url, "--quiet"), "dbt build failed"

    calls = _llm_calls(batch)
    with psycopg.connect(url) as conn:
        marts = conn.execute(
            "select count(*), coalesce(sum(tokens_input), 0), coalesce(sum(tokens_output), 0),"
            " coalesce(sum(tokens_total), 0), coalesce(sum(total_cost_usd), 0), coalesce(sum(llm_call_count), 0)"
            " from marts.fct_sessions where project_id = %s", (tenant.project_id,)).fetchone()
        daily = conn.execute("select coalesce(sum(cost_usd), 0), coalesce(sum(tokens_input), 0)"
                             " from marts.agg_agent_cost_daily where project_id = %s", (tenant.project_id,)).fetchone()
    with localcontext(prec=1000):  # exact: costs as small as 1e-300 beside costs of 1e9
        sent_cost = sum((Decimal(repr(c["metrics"]["costUsd"])) for c in calls
                         if c["metrics"].get("costUsd") is not None), Decimal(0))
    totals = [c["metrics"].get("tokensTotal", c["metrics"]["tokensInput"] + c["metrics"]["tokensOutput"])
              for c in calls]
    expected = (len(batch), sum(c["metrics"]["tokensInput"] for c in calls),
                sum(c["metrics"]["tokensOutput"] for c in calls), sum(totals), sent_cost, len(calls))
    names = ("sessions", "tokens_input", "tokens_output", "tokens_total", "cost", "llm_calls")
    assert {n: v for n, v in zip(names, marts, strict=True)} == dict(zip(names, expected, strict=True))
    assert daily == (sent_cost, sum(c["metrics"]["tokensInput"] for c in calls))

    days = sorted({(START + timedelta(milliseconds=s["startTime"] - START_MS)).date() for s in batch})
    with psycopg.connect(url, autocommit=True) as conn:
        summary = detect_days(conn, days)
    assert summary.judged_sessions >= len(batch)  # every session of those days, of every project
