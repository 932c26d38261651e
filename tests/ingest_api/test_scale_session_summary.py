"""The summary a session's row carries from ingest (migration 0009): the session list reads it
instead of counting the session's rows in three tables, and GET /v1/sessions/{id} bounds its read
of llm_calls by it. Both must answer exactly as counting and an unbounded read would, also for
sessions stored before the summary existed."""

from __future__ import annotations

import copy
import random
from decimal import Decimal

import psycopg

from simulator.samples import make_session
from tests.support.services import post

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z
MINUTE = 60_000


def odd_sessions() -> list[dict]:
    """Sessions whose summaries are easy to get wrong: costs whose float sum is not their exact
    sum, calls without tokens or cost, no LLM call at all, a call that starts before its
    session, tool errors."""
    rng = random.Random(1)
    sessions = [
        make_session(rng, agent_name="summary", start_ms=T0 + i * MINUTE, turns=3, tools_per_turn=2) for i in range(6)
    ]
    calls = [c for t in sessions[0]["turns"] for c in t["llmCalls"]]
    calls[0]["metrics"]["costUsd"] = 0.123456789012345  # costs are kept exactly as sent
    calls[1]["metrics"]["costUsd"] = 0.00000000005
    calls[2]["metrics"]["costUsd"] = 7
    for call in (c for t in sessions[1]["turns"] for c in t["llmCalls"]):
        call["metrics"] = {}
    for turn in sessions[2]["turns"]:
        turn["llmCalls"] = []
    early = sessions[3]["turns"][1]["llmCalls"][0]
    early["startTime"], early["endTime"] = T0 - 10 * MINUTE, T0 - 9 * MINUTE
    for tool in sessions[4]["turns"][0]["agentResponse"]["toolCalls"]:
        tool["error"], tool["result"] = "refused", None
    return sessions


def expected_summary(s: dict) -> dict:
    """The list's figures for a session, computed from what was sent."""
    calls = [c for t in s["turns"] for c in t["llmCalls"]]
    tools = [x for t in s["turns"] for x in (t.get("agentResponse") or {}).get("toolCalls", [])]
    tokens = [c["metrics"]["tokensTotal"] for c in calls if c["metrics"].get("tokensTotal") is not None]
    costs = [Decimal(repr(c["metrics"]["costUsd"])) for c in calls if c["metrics"].get("costUsd") is not None]
    return {
        "turnCount": len(s["turns"]),
        "llmCallCount": len(calls),
        "toolCallCount": len(tools),
        "toolErrorCount": sum(1 for x in tools if x["error"] is not None),
        "tokensTotal": sum(tokens) if tokens else None,
        "totalCostUsd": float(sum(costs)) if costs else 0,
    }


def listed(tenant) -> dict[str, dict]:
    page = tenant.client.get("/v1/agents/summary/sessions", params={"limit": 100}).json()["sessions"]
    return {s["sessionId"]: {k: s[k] for k in expected_summary({"turns": []})} for s in page}


def forget_summaries(database_url: str, project_id) -> None:
    """What a session stored before migration 0009 looks like."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "update agent_sessions set turn_count = null, llm_call_count = null, tool_call_count = null,"
            " tool_error_count = null, tokens_total = null, llm_cost_usd = null, llm_calls_from = null,"
            " llm_calls_until = null where project_id = %s",
            (project_id,),
        )
        conn.execute("update session_ledger set start_time = null where project_id = %s", (project_id,))


def test_session_list_shows_what_counting_the_sessions_rows_would(tenant, database_url):
    sessions = odd_sessions()
    response = post(tenant, sessions)
    assert response.status_code == 200, response.text

    expected = {s["sessionId"]: expected_summary(s) for s in sessions}
    assert listed(tenant) == expected

    forget_summaries(database_url, tenant.project_id)
    assert listed(tenant) == expected


def test_whole_session_reads_back_every_call_with_or_without_the_summary(tenant, database_url):
    sessions = odd_sessions()
    post(tenant, sessions)
    before = {s["sessionId"]: tenant.client.get(f"/v1/sessions/{s['sessionId']}").json() for s in sessions}

    for s in sessions:
        got = before[s["sessionId"]]
        assert [[c["callId"] for c in t["llmCalls"]] for t in got["turns"]] == [
            [c["callId"] for c in t["llmCalls"]] for t in s["turns"]
        ]
    early = before[sessions[3]["sessionId"]]["turns"][1]["llmCalls"][0]
    assert early["startTime"] == T0 - 10 * MINUTE

    forget_summaries(database_url, tenant.project_id)
    after = {s["sessionId"]: tenant.client.get(f"/v1/sessions/{s['sessionId']}").json() for s in sessions}
    assert after == before


def test_the_summary_is_stored_once_per_session_however_often_it_is_sent(tenant, database_url):
    sessions = odd_sessions()
    post(tenant, sessions)
    resent = copy.deepcopy(sessions)
    resent[0]["turns"] = resent[0]["turns"][:1]  # a different body under the same id: a duplicate
    assert post(tenant, resent).json()["duplicates"] == len(sessions)

    assert listed(tenant)[sessions[0]["sessionId"]] == expected_summary(sessions[0])
