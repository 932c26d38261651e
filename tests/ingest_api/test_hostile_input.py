"""Hostile and unlucky input: every request either works or gets a precise 4xx, cheaply, and
never a 5xx; what was accepted stays stored."""

from __future__ import annotations

import gzip
import random
import time
import uuid

import httpx
import orjson
import pytest

from simulator.samples import make_batch, make_session
from tests.support.services import INGEST, ApiServer, count_rows, new_tenant, post

READ_PATHS = ["/v1/agents/{agent}/sessions", "/v1/agents/{agent}/anomalies", "/v1/agents/{agent}/regressions",
              "/v1/agents/{agent}/metrics", "/v1/agents/{agent}/baseline"]


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def raw(tenant, content: bytes, **headers: str) -> httpx.Response:
    return tenant.client.post(INGEST, content=content, headers={"Content-Type": "application/json", **headers})


def test_metadata_nested_beyond_what_can_be_stored_costs_only_its_session(tenant, database_url):
    good, deep = make_batch(random.Random(1), 2)
    deep["metadata"] = nested(300)
    answer = post(tenant, [good, deep])
    assert answer.status_code == 207, answer.text
    [rejected] = answer.json()["rejected"]
    assert rejected["index"] == 1 and rejected["errorCount"] == 1
    [error] = rejected["errors"]
    assert error["field"].startswith("metadata.a.a.a") and "nested deeper than 254 levels" in error["message"]
    assert count_rows(database_url, tenant.project_id)["agent_sessions"] == 1


def test_a_body_nested_past_the_parser_is_a_400(tenant):
    too_deep = b'{"sessions": [' + b"[" * 5000 + b"]" * 5000 + b"]}"
    answer = raw(tenant, too_deep)
    assert answer.status_code == 400 and "nested too deeply" in answer.json()["detail"]


def test_numbers_that_cannot_be_stored_exactly_are_rejected_per_session(tenant, database_url):
    sessions = make_batch(random.Random(2), 4)
    body = orjson.dumps({"sessions": sessions}).decode()
    # A 70-bit integer (orjson alone would turn it into a float), a double out of range, and
    # invalid UTF-8 in a third session: each is its own session's fault.
    body = body.replace('"region":"eu-west-1"', '"region":1180591620717411303424', 1)
    body = body.replace('"limit":', '"limit":1e400,"was":', 1)
    third = sessions[2]["initialRequest"]
    content = body.encode().replace(third.encode(), third.encode() + b"\xff", 1)
    answer = raw(tenant, content)
    assert answer.status_code == 207, answer.text
    rejected = {r["index"]: r["errors"] for r in answer.json()["rejected"]}
    assert set(rejected) == {0, 2}
    assert rejected[0] == [
        {"field": "metadata.region", "message": "number 1180591620717411303424 cannot be stored exactly "
                                                 "(integers must fit in 64 bits, other numbers in a double)"},
        {"field": "turns[0].agentResponse.toolCalls[0].arguments.limit",
         "message": "number 1e400 cannot be stored exactly (integers must fit in 64 bits, other numbers in a double)"},
    ]
    assert rejected[2] == [{"field": "initialRequest", "message": "text is not valid UTF-8"}]
    assert answer.json()["stored"] == 2 and count_rows(database_url, tenant.project_id)["agent_sessions"] == 2


def test_tiny_costs_are_stored_exactly(tenant):
    session = make_session(random.Random(3), turns=1)
    session["turns"][0]["llmCalls"][0]["metrics"]["costUsd"] = 1.5e-12
    assert post(tenant, [session]).status_code == 200
    back = tenant.client.get(f"/v1/sessions/{session['sessionId']}").json()
    assert back["turns"][0]["llmCalls"][0]["metrics"]["costUsd"] == 1.5e-12


@pytest.mark.parametrize("path", READ_PATHS)
def test_a_nul_in_a_path_or_query_is_a_400_not_a_500(tenant, path):
    assert tenant.client.get(path.format(agent="a%00b")).status_code == 400
    answer = tenant.client.get(path.format(agent="a") + "?status=%00")
    assert answer.status_code == 400 and "status" in answer.json()["detail"]
    assert tenant.client.get(path.format(agent="a") + "?since=%ff").status_code == 400


def test_pinning_a_baseline_for_a_nul_name_is_a_400_not_a_503(tenant):
    answer = tenant.client.put("/v1/agents/a%00b/baseline", json={"from": 0, "to": 1})
    assert answer.status_code == 400


def test_oversized_bodies_are_refused_before_authentication_or_reading(api):
    started = time.monotonic()
    big = httpx.post(api.base_url + INGEST, content=b"x" * 40_000_000, headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and time.monotonic() - started < 2
    # Small-body endpoints take 64 KB at most, whoever sends them.
    resolve = f"{api.base_url}/v1/agents/a/anomalies/{uuid.uuid4()}/resolve"
    started = time.monotonic()
    answer = httpx.post(resolve, content=b"{" + b" " * 1_000_000 + b"}", headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and time.monotonic() - started < 2


def test_a_gzip_bomb_of_empty_turns_is_refused_fast_and_briefly(tenant):
    session = make_session(random.Random(4), turns=1)
    session["turns"] = [{}] * 200_000
    compressed = gzip.compress(orjson.dumps({"sessions": [session]}))
    assert len(compressed) < 50_000
    started = time.monotonic()
    answer = raw(tenant, compressed, **{"Content-Encoding": "gzip"})
    elapsed = time.monotonic() - started
    assert answer.status_code == 422 and elapsed < 1.5, elapsed
    assert len(answer.content) < 2_000
    [rejected] = answer.json()["rejected"]
    assert rejected["errors"] == [{"field": "turns", "message": "at most 500 turns per session (got 200000)"}]


def test_errors_are_capped_per_session_and_per_answer(tenant):
    bad = make_session(random.Random(5), turns=40)
    for turn in bad["turns"]:
        turn["turnNumber"] = -1
    one = post(tenant, [bad]).json()["rejected"][0]
    assert one["errorCount"] == 40 and len(one["errors"]) == 20
    # A thousand empty sessions: a few KB that would be ~400 KB of errors; the answer lists
    # errors only up to its budget and counts the rest.
    answer = raw(tenant, orjson.dumps({"sessions": [{}] * 1000}))
    assert answer.status_code == 422
    body = answer.json()
    assert len(body["rejected"]) == 1000 and all(r["errorCount"] == 4 for r in body["rejected"])
    assert sum(len(r["errors"]) for r in body["rejected"]) == 100
    assert len(answer.content) < 70 * 1000 + 15_000  # one short entry per session, errors within budget


def test_session_limits_are_settings(database_url):
    server = ApiServer(database_url, BAGULA_MAX_TAGS="2", BAGULA_MAX_METADATA_BYTES="100").start()
    try:
        tenant = new_tenant(server, database_url)
        tags, metadata, fine = make_batch(random.Random(6), 3, turns=1)
        tags["tags"] = ["a", "b", "c"]
        metadata["metadata"] = {"blob": "x" * 200}
        answer = post(tenant, [tags, metadata, fine])
        assert answer.status_code == 207
        assert [r["errors"] for r in answer.json()["rejected"]] == [
            [{"field": "tags", "message": "at most 2 tags per session (got 3)"}],
            [{"field": "metadata", "message": "at most 100 bytes of JSON (got 211)"}],
        ]
    finally:
        server.stop()


def test_session_times_must_fall_in_the_accepted_window(database_url):
    # The default window: the past year to one day ahead.
    server = ApiServer(database_url, BAGULA_MAX_SESSION_AGE_DAYS="365").start()
    try:
        tenant = new_tenant(server, database_url)
        now = int(time.time() * 1000)
        old, future, unit_mistake, recent = (make_session(random.Random(seed), start_ms=start, turns=1)
                                             for seed, start in ((7, now - 400 * 86_400_000),
                                                                 (8, now + 2 * 86_400_000),
                                                                 (9, now // 1000), (10, now - 3_600_000)))
        answer = post(tenant, [old, future, unit_mistake, recent])
        assert answer.status_code == 207 and answer.json()["stored"] == 1
        rejected = answer.json()["rejected"]
        assert [r["index"] for r in rejected] == [0, 1, 2]
        for r in rejected:
            assert r["errors"][0]["field"] == "startTime"
            assert "outside the accepted window" in r["errors"][0]["message"]
    finally:
        server.stop()
