"""Exactly once through crashes: PostgreSQL killed (SIGKILL) while the SDK is sending, and the
API killed while it writes a batch; after the restart every session is stored once, none lost."""

from __future__ import annotations

import os
import signal
import threading

import psycopg

from bagula_client import BagulaClient
from ingest_api import db
from tests.support.sdk import record_session
from tests.support.services import ApiServer, new_tenant, remove_cluster, start_cluster, wait_for

FAST = {"flush_interval": 0.05, "initial_backoff": 0.05, "max_backoff": 0.5}


def stored(url: str, project_id) -> tuple[int, int]:
    """(sessions stored, distinct session ids stored) for the project."""
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*), count(distinct session_id) from agent_sessions where project_id = %s",
                            (project_id,)).fetchone()


def copy_in_flight(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=2) as conn:
        return conn.execute("select count(*) from pg_stat_activity where state = 'active'"
                            " and query ilike 'copy agent_sessions%%'").fetchone()[0] > 0


def produce(tracker, count: int, sent: list[str], first: int = 0) -> threading.Thread:
    def work():
        for n in range(first, first + count):
            sent.append(record_session(tracker, n))
    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_postgres_killed_while_the_sdk_sends_loses_and_duplicates_nothing():
    # Durable, as the platform's own cluster is: an acknowledged commit survives the crash
    # (with synchronous_commit off it could not, whatever the API did).
    cluster = start_cluster(durable=True)
    url = cluster.url()
    db.upgrade(url)
    api = ApiServer(url, BAGULA_DB_TIMEOUT_S="1", BAGULA_RETRY_AFTER_S="1").start()
    try:
        tenant = new_tenant(api, url)
        client = BagulaClient(tenant.key, api.base_url, batch_size=25, **FAST)
        sent: list[str] = []
        producing = produce(client.get_session_tracker(), 400, sent)
        wait_for(lambda: client.stats()["sent"] >= 100, timeout=60, interval=0.02)
        postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        os.killpg(os.getpgid(postmaster), signal.SIGKILL)  # the server and every backend, mid-write
        wait_for(lambda: client.stats()["retried"] >= 1, timeout=60, interval=0.02)
        wait_for(lambda: not cluster.running, timeout=30)  # the killed server is gone
        cluster.start()  # crash recovery: what was committed is there, what was not is gone
        producing.join(60)
        assert client.flush(timeout=120), client.stats()
        stats = client.stats()
        assert stats["dropped"] == {} and stats["sent"] + stats["duplicates"] >= 400
        assert stored(url, tenant.project_id) == (400, 400)
        with psycopg.connect(url) as conn:
            ids = {r[0] for r in conn.execute("select session_id::text from agent_sessions where project_id = %s",
                                             (tenant.project_id,))}
        assert ids == set(sent)
        client.close()
    finally:
        api.stop()
        remove_cluster(cluster)


def test_the_api_killed_mid_batch_loses_and_duplicates_nothing(database_url):
    api = ApiServer(database_url, BAGULA_API_WORKERS="1").start()
    try:
        tenant = new_tenant(api, database_url)
        client = BagulaClient(tenant.key, api.base_url, batch_size=200, **FAST)
        sent: list[str] = []
        # Killed while its COPY of a batch runs: that transaction is rolled back, the client
        # never got an answer, and the batch is sent again to the restarted API. A lock held
        # here keeps the first COPY waiting until the API is dead (a COPY lasts milliseconds:
        # polling for one missed them all now and then).
        with psycopg.connect(database_url) as blocker:
            blocker.execute("lock table agent_sessions in share mode")
            producing = produce(client.get_session_tracker(), 1000, sent)
            assert wait_for(lambda: copy_in_flight(database_url), timeout=60, interval=0.05)
            api.kill()
            blocker.rollback()
        wait_for(lambda: client.stats()["retried"] >= 1, timeout=60, interval=0.02)
        api.start()
        producing.join(60)
        assert client.flush(timeout=120), client.stats()
        assert client.stats()["dropped"] == {}
        assert stored(database_url, tenant.project_id) == (1000, 1000)
        client.close()
    finally:
        api.stop()
