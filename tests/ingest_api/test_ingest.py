"""POST /v1/sessions/ingest: exactly once, per-session rejection, whole-request errors."""

from __future__ import annotations

import copy
import gzip
import random
import threading
import uuid

import httpx
import orjson
import pytest

from simulator.samples import make_batch, make_session
from tests.support.services import INGEST, count_rows, post, wait_for


def expected_rows(sessions: list[dict]) -> dict[str, int]:
    """Rows the raw tables should hold for these (distinct, valid) sessions."""
    turns = [t for s in sessions for t in s["turns"]]
    return {
        "session_ledger": len(sessions),
        "agent_sessions": len(sessions),
        "session_turns": len(turns),
        "llm_calls": sum(len(t["llmCalls"]) for t in turns),
        "tool_calls": sum(len((t.get("agentResponse") or {}).get("toolCalls", [])) for t in turns),
    }


def test_round_trip_returns_the_session_as_sent(tenant):
    session = make_session(random.Random(1))
    session["turns"][0]["llmCalls"][0]["metrics"]["costUsd"] = 0.0000015  # sub-micro-dollar survives
    session["startTime"] = 1_764_000_000_123.5  # fractional milliseconds survive

    response = post(tenant, [session])
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 1, "duplicates": 0, "rejected": []}

    read = tenant.client.get(f"/v1/sessions/{session['sessionId']}")
    assert read.status_code == 200
    assert read.json() == session


def test_every_row_of_a_batch_lands_in_the_raw_tables(tenant, database_url):
    sessions = make_batch(random.Random(2), 20)
    assert post(tenant, sessions).json()["stored"] == 20
    assert count_rows(database_url, tenant.project_id) == expected_rows(sessions)


def test_unknown_fields_are_kept_not_rejected(tenant):
    session = make_session(random.Random(3))
    session["sdkVersion"] = "0.4.1"
    session["turns"][0]["latencyBudgetMs"] = 900
    session["turns"][0]["llmCalls"][0]["temperature"] = 0.2
    session["turns"][0]["llmCalls"][0]["metrics"]["cachedTokens"] = 120
    session["turns"][0]["agentResponse"]["reasoning"] = "checked the order first"
    session["turns"][0]["agentResponse"]["toolCalls"][0]["retries"] = 2
    session["finalOutcome"]["escalated"] = False

    assert post(tenant, [session]).status_code == 200
    assert tenant.client.get(f"/v1/sessions/{session['sessionId']}").json() == session


def test_resent_session_is_stored_once(tenant, database_url):
    sessions = make_batch(random.Random(4), 10)
    assert post(tenant, sessions).json() == {"stored": 10, "duplicates": 0, "rejected": []}

    again = sessions[5:] + make_batch(random.Random(5), 3)
    assert post(tenant, again).json() == {"stored": 3, "duplicates": 5, "rejected": []}
    assert count_rows(database_url, tenant.project_id) == expected_rows(sessions + again[5:])


def test_session_repeated_within_a_batch_is_stored_once(tenant, database_url):
    sessions = make_batch(random.Random(6), 4)
    batch = sessions + [copy.deepcopy(sessions[1]), copy.deepcopy(sessions[1])]
    assert post(tenant, batch).json() == {"stored": 4, "duplicates": 2, "rejected": []}
    assert count_rows(database_url, tenant.project_id) == expected_rows(sessions)


def test_concurrent_overlapping_batches_store_each_session_once(tenant, database_url):
    pool = make_batch(random.Random(7), 60)
    rng = random.Random(8)
    batches = [rng.sample(pool, 30) for _ in range(12)]
    results: list[dict] = []

    def send(batch):
        with httpx.Client(base_url=str(tenant.client.base_url), headers=tenant.client.headers, timeout=60) as c:
            r = c.post(INGEST, json={"sessions": batch})
            results.append(r.json())

    threads = [threading.Thread(target=send, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    distinct = {s["sessionId"]: s for b in batches for s in b}
    assert sum(r["stored"] for r in results) == len(distinct)
    assert sum(r["duplicates"] for r in results) == 12 * 30 - len(distinct)
    assert count_rows(database_url, tenant.project_id) == expected_rows(list(distinct.values()))


def test_the_same_session_id_in_two_projects_is_two_sessions(tenant, other_tenant):
    session = make_session(random.Random(9))
    assert post(tenant, [session]).json()["stored"] == 1
    # Another tenant cannot claim (and so hide) this id: its copy is its own.
    assert post(other_tenant, [session]).json()["stored"] == 1


def test_gzip_body_is_accepted(tenant):
    sessions = make_batch(random.Random(10), 5)
    body = gzip.compress(orjson.dumps({"sessions": sessions}))
    response = tenant.client.post(
        INGEST, content=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
    )
    assert response.json() == {"stored": 5, "duplicates": 0, "rejected": []}


def test_empty_batch_stores_nothing(tenant):
    assert post(tenant, []).json() == {"stored": 0, "duplicates": 0, "rejected": []}


# ---------------------------------------------------------------- whole-request errors


def raw_post(tenant, content: bytes, headers: dict | None = None):
    return tenant.client.post(
        INGEST, content=content, headers={"Content-Type": "application/json", **(headers or {})}
    )


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b'{"sessions": [', 400),
        (b"not json at all", 400),
        (b'{"sessions": [{"a": NaN}]}', 400),
        (b"[]", 422),
        (b'{"session": []}', 422),
        (b'{"sessions": {"sessionId": "x"}}', 422),
        (b'{"sessions": [], "timestamp": "yesterday"}', 422),
    ],
    ids=["truncated", "not-json", "nan", "array", "wrong-key", "not-a-list", "bad-timestamp"],
)
def test_a_malformed_request_is_refused_whole(tenant, database_url, content, status):
    response = raw_post(tenant, content)
    assert response.status_code == status
    assert response.json()["detail"]
    assert count_rows(database_url, tenant.project_id)["agent_sessions"] == 0


def test_body_over_the_size_limit_is_refused_before_parsing(api, database_url):
    from tests.support.services import ApiServer, new_tenant

    small = ApiServer(database_url, BAGULA_MAX_BODY_BYTES="20000", BAGULA_MAX_BATCH_SESSIONS="5").start()
    try:
        tenant = new_tenant(small, database_url)
        sessions = make_batch(random.Random(11), 4)  # ~27 KB
        plain = orjson.dumps({"sessions": sessions})
        assert len(plain) > 20000
        assert raw_post(tenant, plain).status_code == 413

        # Compressed it is small, but the limit applies to what it inflates to.
        packed = gzip.compress(plain)
        assert len(packed) < 20000
        response = raw_post(tenant, packed, {"Content-Encoding": "gzip"})
        assert response.status_code == 413

        # A zip bomb: 1 KB on the wire, 50 MB inflated.
        bomb = gzip.compress(b'{"sessions": [' + b" " * 50_000_000 + b"]}")
        assert raw_post(tenant, bomb, {"Content-Encoding": "gzip"}).status_code == 413

        too_many = make_batch(random.Random(12), 6, turns=0)
        response = raw_post(tenant, orjson.dumps({"sessions": too_many}))
        assert response.status_code == 413
        assert "limit is 5" in response.json()["detail"]

        assert count_rows(database_url, tenant.project_id)["agent_sessions"] == 0
        # Within the limits, the same server takes it.
        assert raw_post(tenant, orjson.dumps({"sessions": too_many[:2]})).status_code == 200
    finally:
        small.stop()


def test_corrupt_gzip_is_a_client_error(tenant):
    response = raw_post(tenant, b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"})
    assert response.status_code == 400
    truncated = gzip.compress(orjson.dumps({"sessions": []}))[:-6]
    assert raw_post(tenant, truncated, {"Content-Encoding": "gzip"}).status_code == 400
    assert raw_post(tenant, b"{}", {"Content-Encoding": "br"}).status_code == 415


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer bgl_nope"}],
    ids=["missing", "empty", "wrong-scheme", "unknown"],
)
def test_request_without_a_valid_key_is_refused(api, headers):
    response = httpx.post(api.base_url + INGEST, json={"sessions": make_batch(random.Random(13), 1)}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_refused(tenant, database_url):
    import psycopg

    from ingest_api.store import keys

    assert post(tenant, []).status_code == 200
    with psycopg.connect(database_url) as conn:
        assert keys.revoke_key(conn, str(tenant.key_id)) == 1
    # Key lookups are cached for BAGULA_AUTH_CACHE_S (default 5 s): refused within that.
    refused = wait_for(lambda: post(tenant, make_batch(random.Random(14), 1)).status_code == 401, timeout=10)
    assert refused
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("select count(*) from agent_sessions where project_id = %s",
                              (tenant.project_id,)).fetchone()[0]
    assert stored <= 1  # at most the one session sent while the cache still held the key


def test_project_comes_from_the_key_not_the_body(tenant, other_tenant, database_url):
    session = make_session(random.Random(15))
    session["projectId"] = str(other_tenant.project_id)
    body = {"sessions": [session], "projectId": str(other_tenant.project_id)}
    assert tenant.client.post(INGEST, json=body).json()["stored"] == 1
    assert count_rows(database_url, tenant.project_id)["agent_sessions"] == 1
    assert count_rows(database_url, other_tenant.project_id)["agent_sessions"] == 0


# ---------------------------------------------------------------- per-session faults


def _set(session: dict, path: list, value) -> dict:
    target = session
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return session


DELETE = object()
LLM0 = ["turns", 0, "llmCalls", 0]
TOOL0 = ["turns", 0, "agentResponse", "toolCalls", 0]

FAULTS = {
    "wrong-type": (LLM0 + ["metrics", "tokensInput"], "12", "turns[0].llmCalls[0].metrics.tokensInput"),
    "float-tokens": (LLM0 + ["metrics", "tokensOutput"], 1.5, "turns[0].llmCalls[0].metrics.tokensOutput"),
    "missing-agent": (["agentName"], DELETE, "agentName"),
    "missing-start": (["startTime"], DELETE, "startTime"),
    "bad-uuid": (["sessionId"], "not-a-uuid", "sessionId"),
    "negative-tokens": (LLM0 + ["metrics", "tokensInput"], -1, "turns[0].llmCalls[0].metrics.tokensInput"),
    "negative-cost": (LLM0 + ["metrics", "costUsd"], -0.01, "turns[0].llmCalls[0].metrics.costUsd"),
    "huge-tokens": (LLM0 + ["metrics", "tokensTotal"], 2**40, "turns[0].llmCalls[0].metrics.tokensTotal"),
    "satisfaction-6": (["finalOutcome", "userSatisfaction"], 6, "finalOutcome.userSatisfaction"),
    "satisfaction-0": (["finalOutcome", "userSatisfaction"], 0, "finalOutcome.userSatisfaction"),
    "confidence-1.5": (["finalOutcome", "confidence"], 1.5, "finalOutcome.confidence"),
    "end-before-start": (["endTime"], 1_000, "endTime"),
    "tool-ends-early": (TOOL0 + ["endTime"], 5, "turns[0].agentResponse.toolCalls[0].endTime"),
    "long-agent-name": (["agentName"], "a" * 256, "agentName"),
    "long-model": (LLM0 + ["model"], "m" * 101, "turns[0].llmCalls[0].model"),
    "empty-tool-name": (TOOL0 + ["toolName"], "", "turns[0].agentResponse.toolCalls[0].toolName"),
    "nul-in-request": (["initialRequest"], "hello\x00world", "initialRequest"),
    "nul-in-metadata": (["metadata", "note"], "a\x00b", "metadata.note"),
    "nul-in-messages": (LLM0 + ["messages", 0, "content"], "\x00", "turns[0].llmCalls[0].messages[0].content"),
    "timestamp-in-seconds-as-string": (["turns", 1, "timestamp"], "2026-11-25", "turns[1].timestamp"),
    "turns-not-a-list": (["turns"], {"a": 1}, "turns"),
    "tags-not-strings": (["tags"], [1, 2], "tags[0]"),
}


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_a_bad_session_is_rejected_alone_and_the_rest_stored(tenant, database_url, fault):
    path, value, field = fault
    good = make_batch(random.Random(16), 3)
    bad = _set(make_session(random.Random(17)), path, value)
    response = post(tenant, [good[0], bad, good[1], good[2]])

    assert response.status_code == 207, response.text
    body = response.json()
    assert body["stored"] == 3 and body["duplicates"] == 0
    [rejection] = body["rejected"]
    assert rejection["index"] == 1
    assert field in [e["field"] for e in rejection["errors"]], rejection
    assert all(e["message"] for e in rejection["errors"])
    assert count_rows(database_url, tenant.project_id) == expected_rows(good)


def test_duplicate_call_ids_within_a_session_are_rejected(tenant):
    session = make_session(random.Random(18))
    session["turns"][1]["llmCalls"][0]["callId"] = session["turns"][0]["llmCalls"][0]["callId"]
    session["turns"][2]["turnId"] = session["turns"][0]["turnId"]
    response = post(tenant, [session, make_session(random.Random(19))])
    assert response.status_code == 207
    fields = {e["field"] for e in response.json()["rejected"][0]["errors"]}
    assert fields == {"turns[1].llmCalls[0].callId", "turns[2].turnId"}


def test_invalid_utf8_is_a_fault_of_the_session_that_carries_it(tenant, database_url):
    good = make_session(random.Random(20))
    bad = make_session(random.Random(21))
    bad["userId"] = "PLACEHOLDER"
    lone = make_session(random.Random(22))
    lone["initialRequest"] = "PLACEHOLDER2"
    body = orjson.dumps({"sessions": [good, bad, lone]})
    body = body.replace(b'"PLACEHOLDER"', b'"caf\xe9"')  # Latin-1, not UTF-8
    body = body.replace(b'"PLACEHOLDER2"', b'"\\ud800 lone surrogate"')

    response = raw_post(tenant, body)
    assert response.status_code == 207, response.text
    rejected = response.json()["rejected"]
    assert [(r["index"], r["errors"][0]["field"]) for r in rejected] == [(1, "userId"), (2, "initialRequest")]
    assert "UTF-8" in rejected[0]["errors"][0]["message"]
    assert count_rows(database_url, tenant.project_id)["agent_sessions"] == 1


def test_a_session_that_is_not_an_object_is_rejected(tenant):
    response = post(tenant, [make_session(random.Random(23)), "hello", None])
    assert response.status_code == 207
    assert [r["index"] for r in response.json()["rejected"]] == [1, 2]


def test_batch_with_only_bad_sessions_is_422_and_writes_nothing(tenant, database_url):
    bad = [_set(make_session(random.Random(i)), ["agentName"], DELETE) for i in range(3)]
    response = post(tenant, bad)
    assert response.status_code == 422
    body = response.json()
    assert body["stored"] == 0 and [r["index"] for r in body["rejected"]] == [0, 1, 2]
    assert body["rejected"][0]["sessionId"] == bad[0]["sessionId"]
    assert count_rows(database_url, tenant.project_id)["session_ledger"] == 0


def test_resending_a_batch_with_a_rejected_session_only_duplicates_the_good_ones(tenant):
    good = make_session(random.Random(24))
    bad = _set(make_session(random.Random(25)), ["finalOutcome", "confidence"], 7)
    first = post(tenant, [good, bad]).json()
    second = post(tenant, [good, bad]).json()
    assert (first["stored"], first["duplicates"], len(first["rejected"])) == (1, 0, 1)
    assert (second["stored"], second["duplicates"], len(second["rejected"])) == (0, 1, 1)


def test_session_ids_compare_as_uuids_not_text(tenant):
    session = make_session(random.Random(26))
    upper = copy.deepcopy(session)
    upper["sessionId"] = session["sessionId"].upper()
    assert post(tenant, [session, upper]).json() == {"stored": 1, "duplicates": 1, "rejected": []}
    assert uuid.UUID(session["sessionId"])
