"""Operating the API: Prometheus metrics summed over its workers on a port of their own, one
JSON log line per request carrying the request id the answer carries too, and connections
spread over every worker."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bagula.localdb import free_port
from ingest_api.app import create_app
from ingest_api.settings import ApiSettings
from simulator.samples import make_batch
from tests.support.services import TEST_ENV, ApiServer, new_tenant, post


def samples(text: str) -> dict[tuple, float]:
    """(metric sample name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_are_summed_over_workers_on_their_own_port(database_url):
    metrics_port = free_port()
    server = ApiServer(database_url, BAGULA_API_WORKERS="2", BAGULA_METRICS_PORT=str(metrics_port),
                       BAGULA_MAX_SESSION_AGE_DAYS="365").start()
    try:
        tenant = new_tenant(server, database_url)
        hour_ago = int(time.time() * 1000) - 3_600_000
        good = make_batch(random.Random(1), 3, start_ms=hour_ago)
        late = make_batch(random.Random(2), 1, start_ms=hour_ago - 400 * 86_400_000)  # out of the window
        for _ in range(4):  # fresh connections: the requests spread over both workers
            with httpx.Client(base_url=server.base_url, headers=tenant.client.headers) as client:
                client.post("/v1/sessions/ingest", json={"sessions": good + late})
        assert post(tenant, make_batch(random.Random(3), 2, start_ms=hour_ago)).status_code == 200
        scraped = samples(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
        assert scraped[("bagula_http_requests_total", (("method", "POST"), ("route", "/v1/sessions/ingest"),
                                                       ("status", "207")))] == 4
        assert scraped[("bagula_http_requests_total", (("method", "POST"), ("route", "/v1/sessions/ingest"),
                                                       ("status", "200")))] == 1
        assert scraped[("bagula_ingest_sessions_total", (("outcome", "stored"),))] == 5
        assert scraped[("bagula_ingest_sessions_total", (("outcome", "duplicate"),))] == 9
        assert scraped[("bagula_ingest_rejections_total", (("reason", "time_window"),))] == 4
        assert scraped[("bagula_marts_lag_seconds", ())] > 0  # nothing built yet
        assert scraped[("bagula_db_pool_connections", (("state", "size"),))] >= 1
        # Not on the API's own port.
        assert httpx.get(server.base_url + "/metrics").status_code == 404
    finally:
        server.stop()


def test_every_request_is_one_json_log_line_with_its_request_id(database_url):
    server = ApiServer(database_url, BAGULA_API_WORKERS="1").start()
    try:
        tenant = new_tenant(server, database_url)
        mine = tenant.client.get("/v1/agents", headers={"X-Request-Id": "trace-1234"})
        theirs = tenant.client.get("/v1/sessions/not-a-uuid")
        assert mine.headers["x-request-id"] == "trace-1234"
        generated = theirs.headers["x-request-id"]
        assert len(generated) == 32
    finally:
        server.stop()
    lines = [json.loads(line) for line in Path(server.log.name).read_text().splitlines() if line.startswith("{")]
    requests = {line["request_id"]: line for line in lines if line.get("message") == "request"}
    assert requests["trace-1234"]["route"] == "/v1/agents" and requests["trace-1234"]["status"] == 200
    assert requests[generated]["status"] == 422 and requests[generated]["path"] == "/v1/sessions/not-a-uuid"
    assert all({"time", "level", "logger"} <= line.keys() for line in lines)


def sockets_on(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets on the local port in the state (01 established, 0A listening)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                found.add(fields[9])
    return found


def established_connections_by_worker(server: ApiServer) -> dict[int, int]:
    """Worker pid -> client connections it holds on the server's port (from /proc)."""
    established = sockets_on(server.port, "01")
    workers = {}
    for pid in Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split():
        if "multiprocessing.spawn" not in Path(f"/proc/{pid}/cmdline").read_text():
            continue  # multiprocessing's resource tracker
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            held += target.startswith("socket:[") and target[8:-1] in established
        workers[int(pid)] = held
    return workers


def healthz_keeping_alive(client: socket.socket) -> bytes:
    client.sendall(b"GET /healthz HTTP/1.1\r\nHost: bagula\r\n\r\n")
    return client.recv(65536)


def test_long_lived_connections_spread_over_every_worker(database_url):
    # SDKs keep one connection open and post batch after batch. With one listening socket shared
    # by the workers, the first to wake accepted all of them and the other worker idled.
    server = ApiServer(database_url, BAGULA_API_WORKERS="2").start()
    deadline = time.monotonic() + 60  # the server answers as soon as its first worker listens
    while len(sockets_on(server.port, "0A")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    # Connected at once, as a fleet of clients reconnecting after a restart: all in the
    # listening queue before a worker accepts any.
    clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(16)]
    try:
        for client in clients:
            assert healthz_keeping_alive(client).startswith(b"HTTP/1.1 200")
        held = established_connections_by_worker(server)
        assert len(held) == 2 and sum(held.values()) == 16, held
        # The kernel hashes each connection to a worker's socket: all 16 on one has p = 2**-15.
        assert min(held.values()) > 0, held

        # Each worker's socket shares the port (SO_REUSEPORT); a second server must not.
        second = subprocess.run(
            [sys.executable, "-m", "bagula", "api", "--port", str(server.port), "--workers", "2"],
            env={**os.environ, "BAGULA_DATABASE_URL": database_url, **TEST_ENV},
            capture_output=True, text=True, timeout=60,
        )
        assert second.returncode != 0
        assert f"cannot listen on 127.0.0.1:{server.port}" in second.stderr
        assert httpx.get(server.base_url + "/healthz").status_code == 200
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_the_api_queries_without_jit_compilation(database_url):
    # A plan whose cost estimate passes jit_above_cost (the session list's lateral counts at a
    # million sessions) spent 70 ms compiling for 3 ms of work.
    app = create_app(ApiSettings(database_url=database_url, otlp_assembler=False))

    async def jit_of_a_pooled_connection() -> str:
        async with app.router.lifespan_context(app):
            async with app.state.pool.connection() as conn:
                return (await (await conn.execute("show jit")).fetchone())[0]

    jit = asyncio.run(jit_of_a_pooled_connection())
    assert jit == "off"
