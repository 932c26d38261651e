"""Real PostgreSQL and a real API server, started by the test run itself."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from bagula.localdb import LocalPostgres, free_port
from ingest_api.store import keys

INGEST = "/v1/sessions/ingest"


def start_cluster(durable: bool = False) -> LocalPostgres:
    """A throw-away cluster; not durable (no fsync, asynchronous commit) unless a test needs
    acknowledged commits to survive a crash."""
    # Not under pytest's tmp_path: the server's OS user must be able to reach it.
    base = Path(tempfile.mkdtemp(prefix="bagula-test-pg-"))
    cluster = LocalPostgres(base, free_port(), durable=durable)
    cluster.ensure()
    return cluster


def remove_cluster(cluster: LocalPostgres) -> None:
    cluster.stop()
    shutil.rmtree(cluster.base_dir, ignore_errors=True)


# Test data is dated (2025-2026) and must stay valid whatever the date the suite runs on: test
# servers accept sessions up to a century old unless a test sets the window itself.
# Servers started by tests serve no metrics port (they would all want 9464) unless a test asks.
TEST_ENV = {"BAGULA_MAX_SESSION_AGE_DAYS": "36500", "BAGULA_METRICS_PORT": "0"}
# Likewise retention, for tests that start the live path (it applies retention): a century.
KEEP_EVERYTHING = {"BAGULA_RETENTION_RAW_DAYS": "36500", "BAGULA_RETENTION_MARTS_DAYS": "36500",
                   "BAGULA_RETENTION_VERDICTS_DAYS": "36500"}


class ApiServer:
    """`bagula api` in a subprocess, as deployed."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # No OTLP assembler unless the test sets its quiet period: one with the default 30 s,
        # sharing a database with an OTLP test's server, would claim that test's traces and
        # hold them back by its own quiet period.
        assembler = {} if "BAGULA_OTLP_SESSION_QUIET_S" in env else {"BAGULA_OTLP_ASSEMBLER": "false"}
        self.env = {**os.environ, "BAGULA_DATABASE_URL": database_url, **TEST_ENV, **assembler, **env}
        self.process: subprocess.Popen | None = None

    def start(self) -> "ApiServer":
        self.log = tempfile.NamedTemporaryFile(prefix="bagula-api-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bagula", "api", "--port", str(self.port)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() takes its workers too
        )
        # Workers import FastAPI, pydantic and psycopg: seconds, more on a busy machine.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("API exited: " + Path(self.log.name).read_text())
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()  # not left serving (or still starting) behind a failed test
        raise RuntimeError("API did not start: " + Path(self.log.name).read_text())

    def kill(self) -> None:
        """SIGKILL the server and its worker processes, as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


@dataclass
class Tenant:
    """A fresh project with one API key, so tests never see each other's data."""

    name: str
    project_id: uuid.UUID
    key_id: uuid.UUID
    key: str
    client: httpx.Client


def new_tenant(api: ApiServer, database_url: str) -> Tenant:
    name = f"test-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url) as conn:
        new = keys.create_key(conn, name)
    client = httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {new.secret}"}, timeout=30
    )
    return Tenant(name, new.project_id, new.key_id, new.secret, client)


def post(tenant: Tenant, sessions: list[dict], **kwargs) -> httpx.Response:
    """POST a batch of sessions as the tenant."""
    return tenant.client.post(INGEST, json={"sessions": sessions, "timestamp": 1_764_000_000_000}, **kwargs)


def count_rows(database_url: str, project_id: uuid.UUID) -> dict[str, int]:
    """Rows per raw table for one project."""
    with psycopg.connect(database_url) as conn:
        return {
            table: conn.execute(
                f"select count(*) from {table} where project_id = %s", (project_id,)
            ).fetchone()[0]
            for table in ("session_ledger", "agent_sessions", "session_turns", "llm_calls", "tool_calls")
        }


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.25):
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout`` s.
    For processes started outside the test (a server coming up), where no event can be awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError("condition not reached in time")
