"""The API against an unreliable database: the ingest watermark never skips a late
batch, an outage answers 503 and heals, the API starts before its database, and a
session the database refuses costs only itself."""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx
import psycopg
import pytest

from ingest_api import db
from ingest_api.store import keys
from ingest_api.store import sessions as session_store
from ingest_api.store.keys import Principal
from ingest_api.wire import validate_session
from simulator.samples import make_batch
from tests.support.services import ApiServer, new_tenant, remove_cluster, start_cluster, wait_for

INGEST = "/v1/sessions/ingest"


def test_watermark_never_skips_a_batch_committed_late(database_url):
    """A reader that advances to bagula_watermark() picks up a batch whose
    transaction began first but committed last."""
    with psycopg.connect(database_url) as conn:
        new = keys.create_key(conn, f"wm-{uuid.uuid4().hex[:8]}")
    principal = Principal(new.key_id, new.project_id)
    raw = {seed: make_batch(random.Random(seed), 3) for seed in (1, 2)}

    def encoded(sessions: list[dict]) -> list:
        return [session_store.encode(principal, validate_session(s, check_values=False)[0]) for s in sessions]

    early, late = encoded(raw[1]), encoded(raw[2])
    # Copies under other ids, stored first: with TimescaleDB, a time chunk made by a transaction
    # still open makes the other writers to it wait, which is not what this test is about.
    chunk_makers = encoded([{**s, "sessionId": str(uuid.uuid4())} for s in raw[1] + raw[2]])

    def read_since(conn, watermark: int) -> tuple[set[str], int]:
        upto = conn.execute("select bagula_watermark()").fetchone()[0]
        rows = conn.execute(
            "select session_id::text from agent_sessions"
            " where project_id = %s and ingest_txid >= %s and ingest_txid < %s",
            (new.project_id, watermark, upto),
        ).fetchall()
        return {r[0] for r in rows}, upto

    async def scenario() -> None:
        reader = psycopg.connect(database_url, autocommit=True)
        slow = await psycopg.AsyncConnection.connect(database_url)
        fast = await psycopg.AsyncConnection.connect(database_url)
        async with fast.transaction():
            await session_store.ingest(fast, principal, chunk_makers)
        _, watermark = read_since(reader, 0)
        async with slow.transaction():
            await session_store.ingest(slow, principal, early)  # started first, still open
            await session_store.ingest(fast, principal, late)  # committed
            seen, watermark = read_since(reader, watermark)
            assert seen == set()  # the committed batch waits behind the open one
        seen, watermark = read_since(reader, watermark)
        assert seen == {str(s.session_id) for s in early + late}
        seen, _ = read_since(reader, watermark)
        assert seen == set()  # and nothing is read twice
        for c in (slow, fast):
            await c.close()
        reader.close()

    asyncio.run(scenario())




def test_database_outage_answers_503_and_recovers():
    cluster = start_cluster()
    url = cluster.url()
    db.upgrade(url)
    api = ApiServer(url, BAGULA_DB_TIMEOUT_S="1", BAGULA_RETRY_AFTER_S="3").start()
    try:
        tenant = new_tenant(api, url)
        before, during = make_batch(random.Random(3), 5), make_batch(random.Random(4), 5)
        assert tenant.client.post(INGEST, json={"sessions": before}).json()["stored"] == 5

        cluster.stop()
        response = tenant.client.post(INGEST, json={"sessions": during})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        assert tenant.client.get("/v1/agents").status_code == 503
        assert tenant.client.get("/readyz").status_code == 503
        assert tenant.client.get("/healthz").status_code == 200

        cluster.start()
        wait_for(lambda: tenant.client.get("/readyz").status_code == 200)
        # What was refused during the outage was not stored; resent, it is, once.
        assert tenant.client.post(INGEST, json={"sessions": during + before}).json() == {
            "stored": 5, "duplicates": 5, "rejected": []
        }
        [agent] = tenant.client.get("/v1/agents").json()["agents"]
        assert agent["sessionCount"] == 10
    finally:
        api.stop()
        remove_cluster(cluster)


def test_api_starts_while_the_database_is_down_and_serves_once_it_is_up():
    cluster = start_cluster()
    url = cluster.url()
    db.upgrade(url)
    with psycopg.connect(url) as conn:
        key = keys.create_key(conn, "late-db").secret
    cluster.stop()
    api = ApiServer(url, BAGULA_DB_TIMEOUT_S="1").start()
    try:
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(api.base_url + "/v1/agents", headers=headers).status_code == 503
        cluster.start()
        wait_for(lambda: httpx.get(api.base_url + "/v1/agents", headers=headers).status_code == 200)
    finally:
        api.stop()
        remove_cluster(cluster)


def test_a_session_the_database_refuses_costs_only_itself(database_url):
    """Defence in depth: should validation ever miss a fault, the store isolates
    the session the database refuses and still stores the rest of the batch."""
    with psycopg.connect(database_url) as conn:
        new = keys.create_key(conn, f"refuse-{uuid.uuid4().hex[:8]}")
    principal = Principal(new.key_id, new.project_id)
    sessions = [validate_session(s, check_values=False)[0] for s in make_batch(random.Random(30), 4)]
    sessions[2]["turns"][0]["turnId"] = "turn\x00one"  # bypasses validation, which refuses NUL characters
    batch = [session_store.encode(principal, s) for s in sessions]

    async def scenario():
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            return await session_store.ingest(conn, principal, batch + batch[:1])

    outcome = asyncio.run(scenario())
    assert (outcome.stored, outcome.duplicates) == (3, 1)
    assert list(outcome.refused) == [batch[2].session_id]
    assert "0x00" in outcome.refused[batch[2].session_id]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "select count(*) from agent_sessions where project_id = %s", (new.project_id,)
        ).fetchone()[0]
    assert stored == 3


@pytest.mark.parametrize("field", ["turnNumber", "tokensInput"])
def test_a_count_too_large_for_its_column_is_refused_before_the_write_not_wrapped(field):
    """Binary COPY would store 2**40 in an int4 column as 0: should validation ever let one
    through, encoding refuses the session and names the field."""
    session = validate_session(make_batch(random.Random(31), 1)[0], check_values=False)[0]
    turn = session["turns"][0]
    if field == "turnNumber":
        turn["turnNumber"] = 2**40
        where = "turns[0].turnNumber"
    else:
        turn["llmCalls"][0]["metrics"]["tokensInput"] = 2**40
        where = "turns[0].llmCalls[0].metrics.tokensInput"
    with pytest.raises(session_store.Unstorable) as refused:
        session_store.encode(Principal(uuid.uuid4(), uuid.uuid4()), session)
    assert (refused.value.field, refused.value.message) == (where, f"{2**40} is out of range for a 4-byte integer")
