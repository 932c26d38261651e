"""The `bagula` command: migrations, keys, errors without a database, and `bagula run`
starting the whole platform on a project-local database."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from bagula.localdb import LocalPostgres, free_port
from ingest_api import db
from simulator.samples import make_batch
from tests.support.cli import bagula
from tests.support.services import KEEP_EVERYTHING, TEST_ENV, remove_cluster, wait_for

INGEST = "/v1/sessions/ingest"


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

    heads = ScriptDirectory(str(db.MIGRATIONS_DIR)).get_heads()
    assert len(heads) == 1, f"migrations must form one line, not branches: {heads}"
    assert db.current_revision(url) == heads[0]
    if timescaledb_available(url):
        assert "hypertables agent_sessions, llm_calls" in second.stderr
    else:
        # The skip is visible, not silent.
        assert "the timescaledb extension is not installed on this server; skipped hypertables" in first.stderr
        assert "plain PostgreSQL tables" in second.stderr
        assert db.hypertables(url) == []


def test_hypertables_on_timescaledb(pg):
    url = fresh_database(pg, "tsdb")
    if not timescaledb_available(url):
        pytest.skip("timescaledb extension is not installed on this PostgreSQL server")
    db.upgrade(url)
    assert db.hypertables(url) == ["agent_sessions", "llm_calls"]


def test_timescaledb_installed_but_not_preloaded_means_plain_tables_and_says_why():
    """The state right after installing TimescaleDB's package: `create extension` would fail,
    so auto mode uses plain tables and tells how to enable hypertables."""
    cluster = LocalPostgres(Path(tempfile.mkdtemp(prefix="bagula-test-pg-")), free_port(), durable=False,
                            preload_timescaledb=False)
    if not cluster.timescaledb_library:
        pytest.skip("timescaledb is not installed beside this PostgreSQL's binaries")
    try:
        url = cluster.ensure()
        upgraded = bagula(url, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        assert "timescaledb is installed but not preloaded: add it to shared_preload_libraries" in upgraded.stderr
        assert db.hypertables(url) == []
    finally:
        remove_cluster(cluster)


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
    # Refused once the API's key cache (BAGULA_AUTH_CACHE_S, 5 s) lets go of it.
    assert wait_for(lambda: httpx.get(api.base_url + "/v1/agents", headers=headers).status_code == 401, timeout=10)
    assert bagula(database_url, "keys", "revoke", key).returncode != 0


def test_commands_without_a_database_url_say_what_is_missing():
    result = bagula(None, "db", "upgrade")
    assert result.returncode != 0
    assert "BAGULA_DATABASE_URL is not set" in result.stderr





def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_run_starts_the_platform_on_a_project_local_database_and_stops_it(tmp_path):
    """`bagula run` without BAGULA_DATABASE_URL: own cluster, schema, first key, API;
    a second start keeps the data and does not mint another key."""
    import signal

    data_dir = Path(tempfile.mkdtemp(prefix="bagula-run-"))
    data_dir.chmod(0o755)
    port, db_port, dagster_port, superset_port = free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "BAGULA_DATABASE_URL"}
    env |= TEST_ENV | KEEP_EVERYTHING | {"BAGULA_DATA_DIR": str(data_dir), "BAGULA_LOCAL_DB_PORT": str(db_port), "BAGULA_API_WORKERS": "1",
            "BAGULA_DAGSTER_PORT": str(dagster_port), "BAGULA_SUPERSET_PORT": str(superset_port)}
    base = f"http://127.0.0.1:{port}"

    def start() -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"run-{time.monotonic_ns()}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "bagula", "run", "--port", str(port)],
            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )

        def ready():
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(base + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready)
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
        wait_for(lambda: _answers(f"http://127.0.0.1:{dagster_port}/server_info"), timeout=90)
        wait_for(lambda: _answers(f"http://127.0.0.1:{superset_port}/health"), timeout=90)
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
