"""One HTTP convention: camelCase fields, epoch-millisecond times, nextCursor on every list,
and one error body (RFC 9457 problem details) for every failure, as /docs shows it."""

from __future__ import annotations

import gzip
import random
import re

import httpx
import pytest

from simulator.samples import make_batch
from tests.support.services import INGEST, post

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
PROBLEM = "application/problem+json"


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _property_names(spec: dict, schema: dict, seen: set[str]) -> set[str]:
    """Every property name reachable from ``schema`` through the API's own models."""
    names: set[str] = set()
    ref = schema.get("$ref")
    if ref:
        if ref in seen:
            return names
        seen.add(ref)
    schema = _resolve(spec, schema)
    for name, child in schema.get("properties", {}).items():
        names.add(name)
        names |= _property_names(spec, child, seen)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            names |= _property_names(spec, schema[key], seen)
    for key in ("anyOf", "allOf", "oneOf"):
        for child in schema.get(key, []):
            names |= _property_names(spec, child, seen)
    return names


def test_every_documented_response_is_camel_case_and_every_error_a_problem(api):
    spec = httpx.get(api.base_url + "/openapi.json").json()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                if status.startswith(("4", "5")):
                    assert content and all(_resolve(spec, c["schema"]).get("title", "").endswith("Problem")
                                           for c in content.values() if "schema" in c), (method, path, status)
                    continue
                for media in content.values():
                    names = _property_names(spec, media.get("schema", {}), set())
                    wrong = sorted(n for n in names if not CAMEL.match(n))
                    assert not wrong, f"{method} {path} {status}: {wrong}"
                    checked += 1
            if method == "get" and path.startswith("/v1/agents/{agent_name}/") and "cursor" in {
                    p["name"] for p in operation.get("parameters", [])}:
                page = _resolve(spec, operation["responses"]["200"]["content"]["application/json"]["schema"])
                assert "nextCursor" in page["properties"], path
    assert checked >= 10


@pytest.mark.parametrize("case", ["no-key", "unknown-session", "bad-limit", "bad-json", "bad-gzip", "bad-cursor",
                                  "not-the-envelope"])
def test_every_error_is_a_problem_document(api, tenant, case):
    client = tenant.client
    answer = {
        "no-key": lambda: httpx.get(api.base_url + "/v1/agents"),
        "unknown-session": lambda: client.get("/v1/sessions/00000000-0000-4000-8000-000000000000"),
        "bad-limit": lambda: client.get("/v1/agents/a/sessions", params={"limit": 0}),
        "bad-json": lambda: client.post(INGEST, content=b"{", headers={"Content-Type": "application/json"}),
        "bad-gzip": lambda: client.post(INGEST, content=b"nope", headers={"Content-Encoding": "gzip"}),
        "bad-cursor": lambda: client.get("/v1/agents/a/sessions", params={"cursor": "nope"}),
        "not-the-envelope": lambda: client.post(INGEST, json=[1, 2]),
    }[case]()
    assert answer.status_code in (400, 401, 404, 422), answer.text
    assert answer.headers["content-type"] == PROBLEM
    body = answer.json()
    assert body["type"] == "about:blank" and body["status"] == answer.status_code
    assert body["title"] and body["detail"]
    if case in ("bad-limit", "bad-cursor"):
        [error] = body["errors"]
        assert error["field"] in ("query.limit", "cursor") and error["message"]


def test_a_batch_with_every_session_rejected_is_a_problem_with_its_counts(tenant):
    bad = [{"sessionId": "not-a-uuid"}, {"agentName": 3}]
    answer = post(tenant, bad)
    assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
    body = answer.json()
    assert (body["status"], body["stored"], body["duplicates"]) == (422, 0, 0)
    assert [r["index"] for r in body["rejected"]] == [0, 1]


def test_times_are_epoch_milliseconds_in_and_out(tenant):
    sessions = make_batch(random.Random(5), 3, start_ms=1_764_000_000_000, turns=1)
    assert post(tenant, sessions).status_code == 200
    [agent] = tenant.client.get("/v1/agents").json()["agents"]
    assert (agent["firstSeen"], agent["lastSeen"]) == (1_764_000_000_000, 1_764_000_002_000)
    newest_two = tenant.client.get("/v1/agents/customer-support-agent/sessions",
                                   params={"since": 1_764_000_001_000}).json()
    assert [s["startTime"] for s in newest_two["sessions"]] == [1_764_000_002_000, 1_764_000_001_000]
    assert newest_two["nextCursor"] is None
    same = tenant.client.get("/v1/agents/customer-support-agent/sessions",
                             params={"since": "2025-11-24T16:00:01Z"}).json()
    assert same == newest_two


def test_gzip_and_plain_bodies_answer_alike(tenant):
    sessions = make_batch(random.Random(6), 2, turns=1)
    body = httpx.Request("POST", "/", json={"sessions": sessions}).content
    answer = tenant.client.post(INGEST, content=gzip.compress(body),
                                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert answer.json() == {"stored": 2, "duplicates": 0, "rejected": []}
