"""GET /v1/agents reads per-agent counts the ingest transaction keeps (migration 0009), not a
scan of the project's history: they must stay exactly what a scan would say, whatever the
concurrency, the duplicates and the deletions."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg

from simulator.samples import make_session
from tests.support.services import post

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z
MINUTE = 60_000


def sessions_for(agents: list[str], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        make_session(rng, agent_name=agents[i % len(agents)], start_ms=T0 + rng.randrange(0, 10_000) * MINUTE, turns=1)
        for i in range(n)
    ]


def expected_agents(sessions: list[dict]) -> list[dict]:
    """What GET /v1/agents must answer, computed from what was sent (each id once)."""
    unique = {s["sessionId"]: s for s in sessions}.values()
    by_agent: dict[str, list[int]] = {}
    for s in unique:
        by_agent.setdefault(s["agentName"], []).append(s["startTime"])
    return [
        {"agentName": a, "sessionCount": len(t), "firstSeen": min(t), "lastSeen": max(t)}
        for a, t in sorted(by_agent.items())
    ]


def scanned_agents(database_url: str, project_id) -> list[dict]:
    """The same figures by the scan of agent_sessions the counts replace."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select agent_name, count(*), (extract(epoch from min(start_time)) * 1000)::bigint,"
            " (extract(epoch from max(start_time)) * 1000)::bigint from agent_sessions where project_id = %s"
            " group by 1 order by 1",
            (project_id,),
        ).fetchall()
    return [{"agentName": a, "sessionCount": n, "firstSeen": f, "lastSeen": last} for a, n, f, last in rows]


def send_concurrently(tenant, sessions: list[dict], clients: int, seed: int) -> None:
    """Every session sent by several clients at once, in overlapping batches with repeats inside."""
    rng = random.Random(seed)
    batches = []
    for _ in range(3):  # each session goes out three times
        shuffled = sessions[:]
        rng.shuffle(shuffled)
        for i in range(0, len(shuffled), 40):
            batch = shuffled[i : i + 40]
            batches.append(batch + batch[:3])  # and some twice within a batch
    rng.shuffle(batches)

    def send(batch: list[dict]) -> None:
        response = post(tenant, batch)
        assert response.status_code == 200, response.text

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, batches))


def test_agent_counts_stay_exact_under_concurrent_duplicated_ingest(tenant, database_url):
    sessions = sessions_for(["alpha", "beta", "gamma"], 600, seed=1)

    send_concurrently(tenant, sessions, clients=8, seed=2)

    agents = tenant.client.get("/v1/agents").json()["agents"]
    assert agents == expected_agents(sessions)
    assert agents == scanned_agents(database_url, tenant.project_id)
    assert sum(a["sessionCount"] for a in agents) == 600


def test_agent_counts_are_kept_per_project(tenant, other_tenant):
    mine = sessions_for(["alpha"], 30, seed=3)
    theirs = sessions_for(["alpha", "delta"], 20, seed=4)
    post(tenant, mine)
    post(other_tenant, theirs)
    # The same session ids sent to the other project are that project's own sessions.
    post(other_tenant, mine[:5])

    assert tenant.client.get("/v1/agents").json()["agents"] == expected_agents(mine)
    assert other_tenant.client.get("/v1/agents").json()["agents"] == expected_agents(theirs + mine[:5])


def test_recount_after_deleting_sessions_matches_what_is_left(tenant, database_url):
    sessions = sessions_for(["alpha", "beta"], 80, seed=5)
    post(tenant, sessions)
    gone = [s for s in sessions if s["agentName"] == "alpha"][:25]
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "delete from agent_sessions where project_id = %s and session_id = any(%s::uuid[])",
            (tenant.project_id, [s["sessionId"] for s in gone]),
        )
        conn.execute("select bagula_recount_agents(%s)", (tenant.project_id,))

    left = [s for s in sessions if s not in gone]
    assert tenant.client.get("/v1/agents").json()["agents"] == expected_agents(left)


def test_recount_while_batches_arrive_neither_loses_nor_doubles_a_batch(tenant, database_url):
    sessions = sessions_for(["alpha", "beta"], 400, seed=6)
    done = threading.Event()
    recounts = 0

    def recount_until_done() -> None:
        nonlocal recounts
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not done.is_set() or recounts == 0:
                conn.execute("select bagula_recount_agents(%s)", (tenant.project_id,))
                recounts += 1

    recounter = threading.Thread(target=recount_until_done)
    recounter.start()
    try:
        send_concurrently(tenant, sessions, clients=4, seed=7)
    finally:
        done.set()
        recounter.join()

    assert recounts > 1
    assert tenant.client.get("/v1/agents").json()["agents"] == expected_agents(sessions)
