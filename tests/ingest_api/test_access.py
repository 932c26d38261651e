"""Who may call and how often: malformed keys are refused without the database, each key
has a rate, and a client that keeps failing to authenticate is slowed down."""

from __future__ import annotations

import random

import httpx

from bagula.localdb import free_port
from simulator.samples import make_batch
from tests.support.services import INGEST, ApiServer, new_tenant, post

WELL_FORMED_UNKNOWN = "bgl_" + "A" * 43


def test_malformed_keys_are_refused_without_a_database_round_trip():
    # Nothing listens on this port: a key that reached the database would answer 503.
    server = ApiServer(f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none", BAGULA_DB_TIMEOUT_S="1").start()
    try:
        for header in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer not-a-key"},
                       {"Authorization": "Bearer bgl_short"}):
            answer = httpx.get(server.base_url + "/v1/agents", headers=header)
            assert answer.status_code == 401, (header, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
        # A well-formed key has to be looked up: the database being down is a 503, not a 401.
        unknown = httpx.get(server.base_url + "/v1/agents", headers={"Authorization": f"Bearer {WELL_FORMED_UNKNOWN}"})
        assert unknown.status_code == 503 and unknown.headers["retry-after"]
    finally:
        server.stop()


def test_each_key_has_a_rate_and_past_it_gets_429_with_retry_after(database_url):
    # One API process: limits are counted per process (the README says what W workers mean).
    server = ApiServer(database_url, BAGULA_RATE_LIMIT_PER_KEY="5/minute", BAGULA_API_WORKERS="1").start()
    try:
        tenant, other = new_tenant(server, database_url), new_tenant(server, database_url)
        statuses = [post(tenant, make_batch(random.Random(n), 1)).status_code for n in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        limited = tenant.client.get("/v1/agents")
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["content-type"] == "application/problem+json"
        assert other.client.get("/v1/agents").status_code == 200  # another key has its own rate
    finally:
        server.stop()


def test_a_client_that_keeps_failing_to_authenticate_is_slowed_down(database_url):
    server = ApiServer(database_url, BAGULA_FAILED_AUTH_LIMIT="3/minute", BAGULA_AUTH_CACHE_S="60",
                       BAGULA_API_WORKERS="1").start()
    try:
        known, unseen = new_tenant(server, database_url), new_tenant(server, database_url)
        assert known.client.get("/v1/agents").status_code == 200
        bogus = {"Authorization": f"Bearer {WELL_FORMED_UNKNOWN}"}
        statuses = [httpx.get(server.base_url + "/v1/agents", headers=bogus).status_code for _ in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        # The address is braked: any key it has not shown to be good is refused without a lookup...
        braked = unseen.client.get("/v1/agents")
        assert braked.status_code == 429 and int(braked.headers["retry-after"]) >= 1
        assert httpx.post(server.base_url + INGEST, json={"sessions": []}, headers=bogus).status_code == 429
        # ...while a key it already used successfully goes on working.
        assert known.client.get("/v1/agents").status_code == 200
    finally:
        server.stop()
