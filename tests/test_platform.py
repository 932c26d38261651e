"""Operating the platform: migrations, the bagula command, the watermark, database outages."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import time
import uuid

import httpx
import psycopg
import pytest

from ingest_api import db
from ingest_api.localdb import LocalPostgres
from ingest_api.sample_sessions import make_batch
from ingest_api.store import keys
from ingest_api.store import sessions as session_store
from ingest_api.store.keys import Principal
from ingest_api.wire import validate_session
from tests.conftest import ApiServer, new_tenant, remove_cluster, start_cluster

INGEST = "/v1/sessions/ingest"


def bagula(database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingest_api.cli", *args],
        env={**os.environ, "BAGULA_DATABASE_URL": database_url},
        capture_output=True, text=True, timeout=120,
    )


def fresh_database(pg, name: str) -> str:
    return pg.create_database(f"{name}_{uuid.uuid4().hex[:8]}")


def timescaledb_available(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return bool(conn.execute(
            "select 1 from pg_available_extensions where name = 'timescaledb'"
        ).fetchone())


def test_db_upgrade_is_idempotent_and_says_how_time_series_are_stored(pg):
    url = fresh_database(pg, "upgrade")
    first = bagula(url, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    second = bagula(url, "db", "upgrade")
    assert second.returncode == 0, second.stderr
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(db.MIGRATIONS_DIR)).get_current_head()
    assert db.current_revision(url) == head == "0002"
    if timescaledb_available(url):
        assert "hypertables agent_sessions, llm_calls" in second.stderr
    else:
        # The skip is visible, not silent.
        assert "extension not available, skipped hypertables" in first.stderr
        assert "plain PostgreSQL tables" in second.stderr
        assert db.hypertables(url) == []


def test_hypertables_on_timescaledb(pg):
    url = fresh_database(pg, "tsdb")
    if not timescaledb_available(url):
        pytest.skip("timescaledb extension is not installed on this PostgreSQL server")
    db.upgrade(url)
    assert db.hypertables(url) == ["agent_sessions", "llm_calls"]


def test_timescaledb_off_keeps_plain_tables(pg):
    url = fresh_database(pg, "tsoff")
    db.upgrade(url, timescaledb="off")
    assert db.hypertables(url) == []


def test_keys_create_prints_the_key_last_and_revoke_disables_it(api, database_url):
    project = f"cli-{uuid.uuid4().hex[:8]}"
    created = bagula(database_url, "keys", "create", "--project", project)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("bgl_")

    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(api.base_url + "/v1/agents", headers=headers).status_code == 200
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("select key_hash from api_keys where key_prefix = %s", (key[:12],)).fetchall()
        assert key.encode() not in [bytes(r[0]) for r in stored]  # only the hash is kept

    listed = bagula(database_url, "keys", "list", "--project", project)
    assert project in listed.stdout and key not in listed.stdout

    revoked = bagula(database_url, "keys", "revoke", key)
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(api.base_url + "/v1/agents", headers=headers).status_code == 401
    assert bagula(database_url, "keys", "revoke", key).returncode != 0


def test_commands_without_a_database_url_say_what_is_missing():
    env = {k: v for k, v in os.environ.items() if k != "BAGULA_DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "ingest_api.cli", "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "BAGULA_DATABASE_URL is not set" in result.stderr


def test_watermark_never_skips_a_batch_committed_late(database_url):
    """A reader that advances to bagula_ingest_horizon() picks up a batch whose
    transaction began first but committed last."""
    with psycopg.connect(database_url) as conn:
        new = keys.create_key(conn, f"wm-{uuid.uuid4().hex[:8]}")
    principal = Principal(new.key_id, new.project_id)
    early, late = (
        [validate_session(s, check_text=False)[0] for s in make_batch(random.Random(seed), 3)]
        for seed in (1, 2)
    )

    def read_since(conn, watermark: int) -> tuple[set[str], int]:
        horizon = conn.execute("select bagula_ingest_horizon()").fetchone()[0]
        rows = conn.execute(
            "select session_id::text from agent_sessions"
            " where project_id = %s and ingest_txid >= %s and ingest_txid < %s",
            (new.project_id, watermark, horizon),
        ).fetchall()
        return {r[0] for r in rows}, horizon

    async def scenario() -> None:
        reader = psycopg.connect(database_url, autocommit=True)
        watermark = 0
        slow = await psycopg.AsyncConnection.connect(database_url)
        fast = await psycopg.AsyncConnection.connect(database_url)
        async with slow.transaction():
            await session_store.ingest(slow, principal, early)  # started first, still open
            await session_store.ingest(fast, principal, late)  # committed
            seen, watermark = read_since(reader, watermark)
            assert seen == set()  # the committed batch waits behind the open one
        seen, watermark = read_since(reader, watermark)
        assert seen == {str(s["sessionId"]) for s in early + late}
        seen, _ = read_since(reader, watermark)
        assert seen == set()  # and nothing is read twice
        for c in (slow, fast):
            await c.close()
        reader.close()

    asyncio.run(scenario())


def _wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError("condition not reached in time")


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
        _wait_for(lambda: tenant.client.get("/readyz").status_code == 200)
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
        _wait_for(lambda: httpx.get(api.base_url + "/v1/agents", headers=headers).status_code == 200)
    finally:
        api.stop()
        remove_cluster(cluster)


def test_a_session_the_database_refuses_costs_only_itself(database_url):
    """Defence in depth: should validation ever miss a fault, the store isolates
    the session the database refuses and still stores the rest of the batch."""
    with psycopg.connect(database_url) as conn:
        new = keys.create_key(conn, f"refuse-{uuid.uuid4().hex[:8]}")
    principal = Principal(new.key_id, new.project_id)
    batch = [validate_session(s, check_text=False)[0] for s in make_batch(random.Random(30), 4)]
    batch[2]["turns"][0]["llmCalls"][0]["metrics"]["tokensInput"] = 2**40  # bypasses validation

    async def scenario():
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            return await session_store.ingest(conn, principal, batch + batch[:1])

    outcome = asyncio.run(scenario())
    assert (outcome.stored, outcome.duplicates) == (3, 1)
    assert list(outcome.refused) == [batch[2]["sessionId"]]
    assert "out of range" in outcome.refused[batch[2]["sessionId"]]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "select count(*) from agent_sessions where project_id = %s", (new.project_id,)
        ).fetchone()[0]
    assert stored == 3


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_run_starts_the_platform_on_a_project_local_database_and_stops_it(tmp_path):
    """`bagula run` without BAGULA_DATABASE_URL: own cluster, schema, first key, API;
    a second start keeps the data and does not mint another key."""
    import signal
    import tempfile
    from pathlib import Path

    from ingest_api.localdb import free_port

    data_dir = Path(tempfile.mkdtemp(prefix="bagula-run-"))
    data_dir.chmod(0o755)
    port, db_port, dagster_port, superset_port = free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "BAGULA_DATABASE_URL"}
    env |= {"BAGULA_DATA_DIR": str(data_dir), "BAGULA_LOCAL_DB_PORT": str(db_port), "BAGULA_API_WORKERS": "1",
            "BAGULA_DAGSTER_PORT": str(dagster_port), "BAGULA_SUPERSET_PORT": str(superset_port)}
    base = f"http://127.0.0.1:{port}"

    def start() -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"run-{time.monotonic_ns()}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest_api.cli", "run", "--port", str(port)],
            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )

        def ready():
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(base + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for(ready)
        return proc, log

    def stop(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    try:
        proc, log = start()
        output = log.read_text()
        key = output.split("shown once): ")[1].split()[0]
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"})
        assert client.post(INGEST, json={"sessions": make_batch(random.Random(40), 3)}).json()["stored"] == 3
        # Dagster's webserver, with its run storage in the same PostgreSQL.
        _wait_for(lambda: _answers(f"http://127.0.0.1:{dagster_port}/server_info"), timeout=90)
        _wait_for(lambda: _answers(f"http://127.0.0.1:{superset_port}/health"), timeout=90)
        assert "Superset admin" in output and "password (shown once)" in output
        with psycopg.connect(LocalPostgres(data_dir / "postgres", db_port).url()) as conn:
            assert conn.execute("select to_regclass('dagster.runs') is not null").fetchone()[0]
        stop(proc)
        cluster = LocalPostgres(data_dir / "postgres", db_port)
        assert not cluster.running

        proc, log = start()
        assert "shown once" not in log.read_text()
        [agent] = client.get("/v1/agents").json()["agents"]
        assert agent["sessionCount"] == 3
        stop(proc)
    finally:
        LocalPostgres(data_dir / "postgres", db_port).stop()
        shutil.rmtree(data_dir, ignore_errors=True)
