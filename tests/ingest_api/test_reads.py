"""Read endpoints on the raw data: contents, filters, pagination, tenant isolation."""

from __future__ import annotations

import random
from datetime import datetime, timezone

from simulator.samples import make_batch, make_session
from tests.support.services import post as post_any

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z
HOUR = 3_600_000


def post(tenant, sessions):
    response = post_any(tenant, sessions)
    assert response.status_code == 200, response.text
    return response


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def sessions_for(agent: str, seed: int, n: int, start: int, step: int) -> list[dict]:
    rng = random.Random(seed)
    return [make_session(rng, agent_name=agent, start_ms=start + i * step, turns=2) for i in range(n)]


def test_agents_lists_session_counts_and_first_and_last_seen(tenant):
    support = sessions_for("support", 1, 7, T0, HOUR)
    research = sessions_for("research", 2, 3, T0 + 5 * HOUR, HOUR)
    post(tenant, support + research)

    agents = tenant.client.get("/v1/agents").json()["agents"]
    assert agents == [
        {"agentName": "research", "sessionCount": 3, "firstSeen": T0 + 5 * HOUR, "lastSeen": T0 + 7 * HOUR},
        {"agentName": "support", "sessionCount": 7, "firstSeen": T0, "lastSeen": T0 + 6 * HOUR},
    ]


def test_sessions_page_through_newest_first_without_gaps_or_repeats(tenant):
    sent = sessions_for("pager", 3, 23, T0, 60_000)
    # Two sessions at the same instant: the keyset must still order them.
    sent[11]["startTime"] = sent[10]["startTime"]
    post(tenant, sent)

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = tenant.client.get("/v1/agents/pager/sessions", params=params).json()
        seen += page["sessions"]
        pages += 1
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert pages == 5
    expected = sorted(sent, key=lambda s: (s["startTime"], s["sessionId"]), reverse=True)
    assert [s["sessionId"] for s in seen] == [s["sessionId"] for s in expected]


def test_session_summaries_carry_counts_and_cost(tenant):
    session = make_session(random.Random(4), agent_name="summaries", turns=3, tools_per_turn=2)
    session["turns"][1]["agentResponse"]["toolCalls"][0]["error"] = "boom"
    session["turns"][2]["agentResponse"]["toolCalls"][1]["error"] = None
    post(tenant, [session])
    [summary] = tenant.client.get("/v1/agents/summaries/sessions").json()["sessions"]

    calls = [c for t in session["turns"] for c in t["llmCalls"]]
    tools = [c for t in session["turns"] for c in t["agentResponse"]["toolCalls"]]
    assert summary["turnCount"] == 3
    assert summary["llmCallCount"] == len(calls)
    assert summary["tokensTotal"] == sum(c["metrics"]["tokensTotal"] for c in calls)
    assert abs(summary["totalCostUsd"] - sum(c["metrics"]["costUsd"] for c in calls)) < 1e-9
    assert summary["toolCallCount"] == 6
    assert summary["toolErrorCount"] == sum(1 for c in tools if c["error"] is not None)
    assert summary["status"] == session["finalOutcome"]["status"]
    assert summary["userSatisfaction"] == session["finalOutcome"]["userSatisfaction"]


def test_sessions_filter_by_time_status_and_user(tenant):
    sent = sessions_for("filters", 5, 12, T0, HOUR)
    for i, s in enumerate(sent):
        s["finalOutcome"]["status"] = "failure" if i % 3 == 0 else "success"
        s["userId"] = "alice" if i % 2 == 0 else "bob"
    post(tenant, sent)

    def ids(**params):
        page = tenant.client.get("/v1/agents/filters/sessions", params=params | {"limit": 500}).json()
        return {s["sessionId"] for s in page["sessions"]}

    def expect(pred):
        return {s["sessionId"] for i, s in enumerate(sent) if pred(i, s)}

    assert ids(status="failure") == expect(lambda i, s: i % 3 == 0)
    assert ids(userId="bob") == expect(lambda i, s: i % 2 == 1)
    assert ids(since=iso(T0 + 3 * HOUR), until=iso(T0 + 8 * HOUR)) == expect(lambda i, s: 3 <= i < 8)
    assert ids(since=iso(T0 + 3 * HOUR), status="success", userId="alice") == expect(
        lambda i, s: i >= 3 and i % 3 and i % 2 == 0
    )


def test_bad_query_parameters_are_client_errors(tenant):
    assert tenant.client.get("/v1/agents/x/sessions", params={"cursor": "garbage!"}).status_code == 422
    assert tenant.client.get("/v1/agents/x/sessions", params={"limit": 0}).status_code == 422
    assert tenant.client.get("/v1/agents/x/sessions", params={"since": "2026-01-01T00:00:00"}).status_code == 422
    assert tenant.client.get("/v1/sessions/not-a-uuid").status_code == 422


def test_a_key_never_sees_another_projects_data(tenant, other_tenant):
    mine = make_batch(random.Random(6), 3, agent_name="shared-name")
    post(tenant, mine)

    assert other_tenant.client.get("/v1/agents").json() == {"agents": []}
    page = other_tenant.client.get("/v1/agents/shared-name/sessions").json()
    assert page == {"sessions": [], "nextCursor": None}
    for s in mine:
        assert other_tenant.client.get(f"/v1/sessions/{s['sessionId']}").status_code == 404
        assert tenant.client.get(f"/v1/sessions/{s['sessionId']}").status_code == 200


def test_unknown_session_is_404(tenant):
    assert tenant.client.get("/v1/sessions/00000000-0000-4000-8000-000000000000").status_code == 404


def test_read_endpoints_need_a_key(api):
    import httpx

    for path in ("/v1/agents", "/v1/agents/a/sessions", "/v1/sessions/00000000-0000-4000-8000-000000000000"):
        assert httpx.get(api.base_url + path).status_code == 401


def test_openapi_documents_the_wire_format(api):
    import httpx

    spec = httpx.get(api.base_url + "/openapi.json").json()
    body = spec["paths"]["/v1/sessions/ingest"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["properties"]["sessions"]
    assert {"Session", "Turn", "LlmCall", "ToolCall"} <= set(spec["components"]["schemas"])
    assert "tokensInput" in spec["components"]["schemas"]["LlmMetrics"]["properties"]
    assert httpx.get(api.base_url + "/docs").status_code == 200
