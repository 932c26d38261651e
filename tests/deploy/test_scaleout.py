"""Scale-out: two API processes on different ports, one database, driven together with
overlapping batches (every batch goes to both at once, and consecutive batches share half their
sessions). Exactly once still holds: each session is stored once, by one of them, with all its
rows; every other copy is answered as a duplicate."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from ingest_api.store import keys
from simulator.samples import make_batch
from tests.deploy.conftest import new_database
from tests.support.services import ApiServer

BATCH = 20
BATCHES = 12


@pytest.fixture(scope="module")
def two_apis(pg) -> Iterator[tuple[str, list[ApiServer]]]:
    url = new_database(pg, "scaleout")
    # One server process each, as one pod or container is; no rate limit in the way.
    servers = [
        ApiServer(url, BAGULA_API_WORKERS="1", BAGULA_RATE_LIMIT_PER_KEY="100000/second").start() for _ in range(2)
    ]
    yield url, servers
    for server in servers:
        server.stop()


def _overlapping_batches() -> list[list[dict]]:
    """Batch i holds sessions i*BATCH/2 .. i*BATCH/2 + BATCH: each session is in two batches."""
    now = int(time.time() * 1000)
    sessions = make_batch(random.Random(42), (BATCHES + 1) * BATCH // 2, start_ms=now - 3_600_000)
    half = BATCH // 2
    return [sessions[i * half : i * half + BATCH] for i in range(BATCHES)]


async def _send_to_both(servers: list[ApiServer], key: str, batches: list[list[dict]]) -> list[dict]:
    headers = {"Authorization": f"Bearer {key}"}
    clients = [httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60) for server in servers]
    try:

        async def post(client: httpx.AsyncClient, batch: list[dict]) -> dict:
            response = await client.post("/v1/sessions/ingest", json={"sessions": batch, "timestamp": 0})
            assert response.status_code == 200, response.text
            return response.json()

        # Every batch to both servers at the same moment; all batches in flight together.
        return await asyncio.gather(*(post(client, batch) for batch in batches for client in clients))
    finally:
        for client in clients:
            await client.aclose()


def test_two_api_processes_store_every_session_exactly_once(two_apis):
    url, servers = two_apis
    with psycopg.connect(url) as conn:
        new = keys.create_key(conn, "scale-out")
    batches = _overlapping_batches()
    distinct = {s["sessionId"]: s for batch in batches for s in batch}
    sent = sum(len(batch) for batch in batches) * len(servers)

    answers = asyncio.run(_send_to_both(servers, new.secret, batches))

    assert sum(a["stored"] for a in answers) == len(distinct)
    assert sum(a["duplicates"] for a in answers) == sent - len(distinct)
    assert all(a["rejected"] == [] for a in answers)
    # Each server accounted for every session of every batch (stored by it, or a duplicate).
    for answered in (answers[0::2], answers[1::2]):
        assert sum(a["stored"] + a["duplicates"] for a in answered) == sent // 2
    expected = {
        "session_ledger": len(distinct),
        "agent_sessions": len(distinct),
        "session_turns": sum(len(s["turns"]) for s in distinct.values()),
        "llm_calls": sum(len(t["llmCalls"]) for s in distinct.values() for t in s["turns"]),
        "tool_calls": sum(
            len((t.get("agentResponse") or {}).get("toolCalls") or []) for s in distinct.values() for t in s["turns"]
        ),
    }
    with psycopg.connect(url) as conn:
        counted = {
            table: conn.execute(f"select count(*) from {table} where project_id = %s", (new.project_id,)).fetchone()[0]
            for table in expected
        }
        ids = {
            str(row[0])
            for row in conn.execute("select session_id from agent_sessions where project_id = %s", (new.project_id,))
        }
    assert counted == expected
    assert ids == set(distinct)
