"""Operating the API: Prometheus metrics summed over its workers on a port of their own, and
one JSON log line per request carrying the request id the answer carries too."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bagula.localdb import free_port
from simulator.samples import make_batch
from tests.support.services import ApiServer, new_tenant, post


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
