"""Session search (GET /v1/sessions?q=...) and the session detail marts, on sessions sent
through the API and marts built by dbt: what is found, in what order, with which filters,
page by page, in which project; and what the detail models say about a session, checked
against the session as it was sent.

A database of its own: dbt builds the marts of every project in it.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from ingest_api import db
from ingest_api.store import search as search_store
from orchestration.dbt import run_dbt
from simulator.samples import make_batch
from tests.support.services import ApiServer, Tenant, new_tenant

START = 1_764_000_000_000
HOUR = 3_600_000
# The session detail models and the search index, with what they are built from.
MODELS = "+session_search +session_timeline +fct_session_details +fct_session_links"
DETAIL_TABLES = {
    "session_search": "project_id, session_id",
    "fct_session_details": "project_id, session_id",
    "fct_turn_details": "project_id, session_id, turn_id",
    "fct_call_details": "project_id, session_id, call_kind, call_id",
    "fct_session_links": "project_id, session_id, relation, related_session_id",
}
PHRASE = "the replacement shipped on pallet 7 to the Lisbon depot"
LONG_RESULT = "inventory line " * 350  # 5,250 characters: cut at 4,000


def filler(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]) for _ in range(words))


def needle_session(rng: random.Random) -> dict:
    """Two turns; the second's tool call returns PHRASE and an order number; a tool fails; a
    prompt of five messages; a result too long to show whole; user feedback."""
    s = make_batch(rng, 1, start_ms=START + 30 * HOUR, turns=2, agent_name="support-bot")[0]
    s["initialRequest"] = "my pallet order never arrived"
    first, second = s["turns"]
    first["llmCalls"][0]["messages"] = [
        {"role": "system", "content": "You are the support bot."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi, how can I help?"},
        {"role": "user", "content": "where is my order?"},
        {"role": "tool", "content": "order found", "tool_call_id": "call_1"},
    ]
    first["llmCalls"][0]["response"] = {
        "role": "assistant",
        "content": "Let me check the carrier.",
        "tool_calls": [{"id": "call_2", "name": "track"}],
    }
    first["agentResponse"]["toolCalls"][0].update(result=None, error="carrier API returned 503")
    second["agentResponse"]["toolCalls"][0].update(result={"note": PHRASE, "order": "ORD48213"}, error=None)
    second["agentResponse"]["toolCalls"].append(
        {
            "toolId": "call_long",
            "toolName": "stock_report",
            "arguments": "all lines",
            "startTime": second["agentResponse"]["toolCalls"][0]["endTime"],
            "endTime": second["agentResponse"]["toolCalls"][0]["endTime"] + 40,
            "result": LONG_RESULT,
            "error": None,
            "latencyMs": 40,
        }
    )
    second["userFeedback"] = {"rating": 1, "comment": "still waiting for my pallet"}
    s["finalOutcome"]["status"] = "failure"
    return s


def decoy_session(rng: random.Random) -> dict:
    """PHRASE's rare words, far apart in one tool result: found by the words, not by the phrase."""
    s = make_batch(rng, 1, start_ms=START + 31 * HOUR, turns=1, agent_name="support-bot")[0]
    words = ["replacement", "shipped", "pallet", "Lisbon", "depot"]
    s["turns"][0]["agentResponse"]["toolCalls"][0].update(
        result={"log": " ".join(w + " " + filler(rng, 40) for w in words)}, error=None
    )
    return s


def leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for v in value.values() for text in leaves(v)]
    if isinstance(value, list):
        return [text for v in value for text in leaves(v)]
    if isinstance(value, bool) or value is None:
        return []
    return [str(value)]


def words_of(s: dict) -> set[str]:
    """Every word the session said anywhere search looks (lowercased, split at non-alphanumerics)."""
    parts: list[Any] = [
        s["initialRequest"],
        s.get("finalOutcome", {}).get("result"),
        s.get("metadata"),
        s.get("tags"),
        s.get("userId"),
        s["agentName"],
    ]
    for turn in s["turns"]:
        response = turn.get("agentResponse") or {}
        parts += [turn["trigger"], turn.get("userFeedback"), response.get("message")]
        for call in turn.get("llmCalls", []):
            parts += [call.get("messages"), call.get("response")]
        for tool in response.get("toolCalls", []):
            parts += [tool["toolName"], tool.get("arguments"), tool.get("result"), tool.get("error")]
    text = " ".join(leaves(parts)).lower()
    return set(re.split(r"[^a-z0-9]+", text))


@dataclass
class World:
    url: str
    api: ApiServer
    tenant: Tenant
    other: Tenant
    sessions: list[dict]
    needle: dict
    decoy: dict

    def search(self, tenant: Tenant | None = None, **params) -> list[dict]:
        """Every page of a search, with pages of ``limit`` (default 7)."""
        client = (tenant or self.tenant).client
        params = {"limit": 7, **params}
        found: list[dict] = []
        while True:
            answer = client.get("/v1/sessions", params=params)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            found += body["sessions"]
            if not body["nextCursor"]:
                return found
            assert len(body["sessions"]) == params["limit"]
            params["cursor"] = body["nextCursor"]


def send(tenant: Tenant, sessions: list[dict]) -> None:
    answer = tenant.client.post("/v1/sessions/ingest", json={"sessions": sessions})
    assert answer.status_code == 200 and answer.json()["stored"] == len(sessions), answer.text


def build(url: str, *extra: str) -> None:
    assert run_dbt(url, "run", "--select", MODELS, *extra), "dbt run failed"


def rows(url: str, sql: str, params: tuple = ()) -> list[dict]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(sql, params or None)
        names = [c.name for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@pytest.fixture(scope="module")
def world(pg) -> Iterator[World]:
    url = pg.create_database(f"search_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    api = ApiServer(url).start()
    rng = random.Random(7)
    tenant, other = new_tenant(api, url), new_tenant(api, url)
    sessions = []
    for i in range(48):
        [s] = make_batch(
            rng,
            1,
            start_ms=START + i * HOUR // 2,
            turns=2,
            agent_name=("support-bot", "billing-bot", "triage-bot")[i % 3],
        )
        s["userId"] = f"user-{i % 5}"
        sessions.append(s)
    needle, decoy = needle_session(rng), decoy_session(rng)
    sessions += [needle, decoy]
    send(tenant, sessions)
    elsewhere = make_batch(rng, 3, start_ms=START, turns=1, agent_name="support-bot")
    elsewhere[0]["initialRequest"] = PHRASE
    send(other, elsewhere)
    build(url)
    try:
        yield World(url, api, tenant, other, sessions, needle, decoy)
    finally:
        tenant.client.close()
        other.client.close()
        api.stop()


def ids(found: list[dict]) -> list[str]:
    return [s["sessionId"] for s in found]


def test_a_phrase_from_one_tool_result_finds_that_session_first(world):
    phrase = world.search(q=f'"{PHRASE}"')
    words = world.search(q="replacement pallet Lisbon depot")

    assert ids(phrase) == [world.needle["sessionId"]]
    assert phrase[0]["matchedIn"] == ["toolCalls"] and 0 < phrase[0]["rank"] < 1
    # The same words apart (and in no phrase) match too, ranked below the phrase.
    assert ids(words) == [world.needle["sessionId"], world.decoy["sessionId"]]
    assert words[0]["rank"] > words[1]["rank"]
    # The same search from the other project finds that project's session, never this one.
    [theirs] = world.search(world.other, q=f'"{PHRASE}"')
    assert theirs["sessionId"] != world.needle["sessionId"] and theirs["matchedIn"] == ["request"]


def test_a_hit_is_a_session_summary_with_where_the_words_were_found(world):
    [hit] = world.search(q='"still waiting for my pallet"')
    needle = world.needle
    calls = [c for t in needle["turns"] for c in t["llmCalls"]]
    tools = [c for t in needle["turns"] for c in t["agentResponse"]["toolCalls"]]

    assert hit["matchedIn"] == ["request"]  # the user's feedback counts as what the user said
    assert (hit["sessionId"], hit["agentName"], hit["userId"], hit["status"]) == (
        needle["sessionId"],
        "support-bot",
        needle["userId"],
        "failure",
    )
    assert (hit["startTime"], hit["endTime"]) == (needle["startTime"], needle["endTime"])
    assert (hit["turnCount"], hit["llmCallCount"], hit["toolCallCount"], hit["toolErrorCount"]) == (
        2,
        len(calls),
        len(tools),
        1,
    )
    assert hit["tokensTotal"] == sum(c["metrics"]["tokensTotal"] for c in calls)
    assert hit["totalCostUsd"] == pytest.approx(sum(c["metrics"]["costUsd"] for c in calls))
    assert hit["tags"] == needle["tags"]


@pytest.mark.parametrize(
    "filters, since, until",
    [
        ({}, 0, None),
        ({"agentName": "billing-bot"}, 0, None),
        ({"status": "failure"}, 0, None),
        ({"userId": "user-3"}, 0, None),
        ({"since": START + 10 * HOUR, "until": START + 20 * HOUR}, START + 10 * HOUR, START + 20 * HOUR),
        ({"agentName": "support-bot", "since": "2025-11-24T20:00:00Z"}, START + 4 * HOUR, None),  # START + 4 h
    ],
)
def test_filters_narrow_a_search_to_exactly_the_matching_sessions(world, filters, since, until):
    def wanted(s: dict) -> bool:
        return (
            "refund" in words_of(s)
            and s["agentName"] == filters.get("agentName", s["agentName"])
            and s["finalOutcome"]["status"] == filters.get("status", s["finalOutcome"]["status"])
            and s["userId"] == filters.get("userId", s["userId"])
            and since <= s["startTime"] < (until or float("inf"))
        )

    found = world.search(q="refund", **filters)

    expected = {s["sessionId"] for s in world.sessions if wanted(s)}
    assert expected and set(ids(found)) == expected and len(found) == len(expected)
    ranks = [s["rank"] for s in found]
    assert all(r is not None and r > 0 for r in ranks) and ranks == sorted(ranks, reverse=True)


def test_without_q_every_session_newest_first(world):
    found = world.search(limit=9)

    by_start = sorted(world.sessions, key=lambda s: (s["startTime"], s["sessionId"]), reverse=True)
    assert ids(found) == [s["sessionId"] for s in by_start]
    assert {s["rank"] for s in found} == {None}


def test_an_identifier_or_a_part_of_one_finds_its_session(world):
    needle = world.needle["sessionId"]

    assert ids(world.search(q="ORD48213")) == [needle]  # the whole word
    [part] = world.search(q="48213")  # inside it: trigram matching
    assert part["sessionId"] == needle and part["rank"] >= 1
    by_id = world.search(q=needle)
    assert ids(by_id)[0] == needle and by_id[0]["rank"] >= 2
    assert world.search(q="48299") == []


def test_without_the_trigram_index_parts_of_identifiers_are_not_found_until_a_build_adds_it(world):
    trigram = (
        "select indexname from pg_indexes where schemaname = 'marts' and tablename = 'session_search' "
        "and indexdef like '%gin_trgm_ops%'"
    )
    # ...and the index for an agent with a status, added to tables built before it existed
    by_status = (
        "select indexname from pg_indexes where schemaname = 'marts' and tablename = 'session_search' "
        "and indexdef like '%(project_id, agent_name, status, started_at, session_id)'"
    )
    [(index,)] = [tuple(r.values()) for r in rows(world.url, trigram)]
    [(status_index,)] = [tuple(r.values()) for r in rows(world.url, by_status)]
    with psycopg.connect(world.url) as conn:
        conn.execute(f'drop index marts."{index}"')
        conn.execute(f'drop index marts."{status_index}"')
        # an index the detail marts no longer have: (session_id) serves the same lookups
        conn.execute("create index redundant_turn_details on marts.fct_turn_details (project_id, session_id)")

    assert world.search(q="48213") == []  # no error: whole words only
    assert ids(world.search(q="ORD48213")) == [world.needle["sessionId"]]

    build(world.url)  # an incremental build with nothing new: its post-hook puts the index back
    assert len(rows(world.url, trigram)) == 1
    assert len(rows(world.url, by_status)) == 1
    assert rows(world.url, "select indexname from pg_indexes where schemaname = 'marts' and indexdef like "
                           "'CREATE INDEX %USING btree (project_id, session_id)' and tablename like '%\\_details'") == []
    assert ids(world.search(q="48213")) == [world.needle["sessionId"]]


def test_paging_goes_through_windows_of_ranked_matches(world, monkeypatch):
    # Small ranking windows: 3 windows of 4 matches for "refund"'s sessions, pages of 3.
    monkeypatch.setattr(search_store, "RANK_WINDOW", 4)
    project = world.tenant.project_id
    expected = {s["sessionId"] for s in world.sessions if "refund" in words_of(s)}

    async def every_page() -> list[list[dict]]:
        pages, cursor = [], None
        async with await psycopg.AsyncConnection.connect(world.url) as conn:
            while True:
                items, cursor = await search_store.search(
                    conn, project, search_store.SearchFilter(q="refund", limit=3, cursor=cursor)
                )
                pages.append(items)
                if cursor is None:
                    return pages

    pages = asyncio.run(every_page())

    found = [item for page in pages for item in page]
    assert len(expected) > 8 and len(found) == len(expected)
    assert {item["session_id"] for item in found} == expected
    # Within a window, best first; windows go from the newest matches to the oldest.
    windows = [found[i : i + 4] for i in range(0, len(found), 4)]
    for window in windows:
        assert [w["rank"] for w in window] == sorted((w["rank"] for w in window), reverse=True)
    for newer, older in zip(windows, windows[1:], strict=False):
        assert min(w["start_time"] for w in newer) > max(w["start_time"] for w in older)


def test_a_cursor_belongs_to_its_search(world):
    first = world.tenant.client.get("/v1/sessions", params={"q": "refund", "limit": 2}).json()
    answer = world.tenant.client.get("/v1/sessions", params={"q": "invoice", "limit": 2, "cursor": first["nextCursor"]})

    assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("q, status", [("the of and", 200), ("x" * 501, 422)])
def test_stop_words_find_nothing_and_overlong_queries_are_refused(world, q, status):
    answer = world.tenant.client.get("/v1/sessions", params={"q": q})

    assert answer.status_code == status
    if status == 200:
        assert answer.json() == {"sessions": [], "nextCursor": None}
    else:
        assert answer.json()["errors"][0]["field"] == "q"


# --- the session detail models ---------------------------------------------------------------


def cut(text: str) -> str:
    return text if len(text) <= 4000 else text[:4000] + f"… [truncated, {len(text) - 4000:,} more characters]"


def expected_steps(s: dict) -> list[tuple]:
    """(kind, name, input, output) of each step, in order, from the session as sent."""
    steps = []
    for turn in s["turns"]:
        trigger = turn["trigger"]
        steps.append(("turn", trigger["type"], trigger["content"], None))
        calls = [(c["startTime"], "llm", i, c) for i, c in enumerate(turn["llmCalls"])]
        calls += [(c["startTime"], "tool", i, c) for i, c in enumerate(turn["agentResponse"]["toolCalls"])]
        for _, kind, _, call in sorted(calls, key=lambda c: c[:3]):
            if kind == "llm":
                messages = call["messages"]
                shown = messages[-3:]
                prompt = (f"(last 3 of {len(messages)} messages)\n" if len(messages) > 3 else "") + "\n".join(
                    f"{m['role']}: {m['content']}"
                    + (
                        " " + json.dumps({k: v for k, v in m.items() if k not in ("role", "content")})
                        if set(m) - {"role", "content"}
                        else ""
                    )
                    for m in shown
                )
                response = call["response"]
                rest = {k: v for k, v in response.items() if k not in ("role", "content")}
                answer = response["content"] + ("\n" + json.dumps(rest) if rest else "")
                steps.append(("llm", call["model"], prompt, answer))
            else:
                arguments = call["arguments"]
                arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
                result = call["result"]
                result = None if result is None else result if isinstance(result, str) else json.dumps(result)
                output = f"error: {call['error']}" if call["error"] else result
                steps.append(("tool", call["toolName"], arguments, output))
        if turn["agentResponse"]["message"] is not None:
            steps.append(("response", "agent", None, turn["agentResponse"]["message"]))
        if turn["userFeedback"] is not None:
            steps.append(("feedback", "user", json.dumps(turn["userFeedback"]), None))
    return [(kind, name, None if i is None else cut(i), None if o is None else cut(o)) for kind, name, i, o in steps]


def test_the_timeline_shows_a_session_step_by_step_as_it_was_sent(world):
    needle = world.needle
    timeline = rows(
        world.url,
        "select * from marts.session_timeline where project_id = %s and session_id = %s order by step",
        (world.tenant.project_id, needle["sessionId"]),
    )

    assert [r["step"] for r in timeline] == list(range(1, len(timeline) + 1))
    shown = [(r["kind"], r["name"], r["input_text"], r["output_text"]) for r in timeline]
    # jsonb prints objects with its own key order and spacing: compare JSON as JSON.
    normalise = lambda text: json.dumps(json.loads(text), sort_keys=True) if text and text[:1] in "{[" else text  # noqa: E731
    assert [(k, n, normalise(i), normalise(o)) for k, n, i, o in shown] == [
        (k, n, normalise(i), normalise(o)) for k, n, i, o in expected_steps(needle)
    ]
    long = next(r for r in timeline if r["name"] == "stock_report")
    assert long["output_text"].endswith("… [truncated, 1,250 more characters]")
    failed = next(r for r in timeline if r["kind"] == "tool" and r["is_error"])
    assert failed["output_text"] == "error: carrier API returned 503"
    llm = [r for r in timeline if r["kind"] == "llm"]
    sent = [c for t in needle["turns"] for c in t["llmCalls"]]
    assert [(r["tokens_input"], r["tokens_output"], float(r["cost_usd"]), r["latency_ms"]) for r in llm] == [
        (c["metrics"]["tokensInput"], c["metrics"]["tokensOutput"], c["metrics"]["costUsd"], c["metrics"]["latencyMs"])
        for c in sent
    ]
    assert timeline[0]["offset_ms"] == needle["turns"][0]["timestamp"] - needle["startTime"]


def test_turns_and_the_header_add_up_to_what_was_sent(world):
    needle = world.needle
    key = (world.tenant.project_id, needle["sessionId"])
    turns = rows(
        world.url,
        "select * from marts.fct_turn_details where project_id = %s and session_id = %s order by turn_number",
        key,
    )
    [header] = rows(world.url, "select * from marts.fct_session_details where project_id = %s and session_id = %s", key)
    [facts] = rows(world.url, "select * from marts.fct_sessions where project_id = %s and session_id = %s", key)

    for row, turn in zip(turns, needle["turns"], strict=True):
        tools = turn["agentResponse"]["toolCalls"]
        assert (row["turn_id"], row["trigger_text"], row["agent_message"]) == (
            turn["turnId"],
            turn["trigger"]["content"],
            turn["agentResponse"]["message"],
        )
        assert (row["llm_call_count"], row["tool_call_count"], row["tool_error_count"]) == (
            len(turn["llmCalls"]),
            len(tools),
            sum(1 for t in tools if t["error"]),
        )
        assert row["tokens_total"] == sum(c["metrics"]["tokensTotal"] for c in turn["llmCalls"])
        assert row["tool_latency_ms"] == sum(t["latencyMs"] for t in tools)
        assert round(row["answered_at"].timestamp() * 1000) == max(c["endTime"] for c in [*turn["llmCalls"], *tools])
    assert json.loads(turns[1]["user_feedback"]) == needle["turns"][1]["userFeedback"]
    assert (header["initial_request"], header["outcome"]) == (
        needle["initialRequest"],
        needle["finalOutcome"]["result"],
    )
    shared = [c for c in header if c in facts and c not in ("watermark",)]
    assert {c: header[c] for c in shared} == {c: facts[c] for c in shared}
    assert json.loads(header["metadata"]) == needle["metadata"]


def test_new_sessions_are_found_after_an_incremental_build_which_equals_a_full_refresh(world):
    rng = random.Random(11)
    child = make_batch(rng, 1, start_ms=START + 40 * HOUR, turns=1, agent_name="courier-bot")[0]
    child["parentSessionId"] = world.needle["sessionId"]
    child["initialRequest"] = "track the crate for the quokka"
    later = make_batch(rng, 5, start_ms=START + 41 * HOUR, turns=1)
    send(world.tenant, [child, *later])
    assert world.search(q="quokka") == []  # not indexed before the next build

    build(world.url)

    assert ids(world.search(q="quokka")) == [child["sessionId"]]
    links = rows(
        world.url,
        "select session_id, relation, related_session_id from marts.fct_session_links "
        "where project_id = %s order by relation",
        (world.tenant.project_id,),
    )
    assert [(str(r["session_id"]), r["relation"], str(r["related_session_id"])) for r in links] == [
        (world.needle["sessionId"], "child", child["sessionId"]),
        (child["sessionId"], "parent", world.needle["sessionId"]),
    ]

    def snapshot() -> dict[str, list[dict]]:
        return {
            table: [
                {k: v for k, v in r.items() if k != "watermark"}
                for r in rows(world.url, f"select * from marts.{table} order by {key}")
            ]
            for table, key in DETAIL_TABLES.items()
        }

    incremental = snapshot()
    build(world.url, "--full-refresh")
    assert snapshot() == incremental
    assert world.search(q="48213")  # the full refresh's new table got its trigram index
