"""Operating the API: Prometheus metrics and one JSON log line per request, with a request id.

Metrics are counted in each worker process and served, summed over the workers, by the
`bagula api` process on its own port (BAGULA_METRICS_PORT, 9464, bound to localhost by
default: not public): prometheus_client's multiprocess mode, through PROMETHEUS_MULTIPROC_DIR.
The same port reports, at scrape time, how far the marts lag behind ingest.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter as Tally
from dataclasses import dataclass
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("bagula.api.access")

REQUEST_ID = "x-request-id"


@dataclass(frozen=True)
class ApiMetrics:
    requests: Counter
    latency: Histogram
    sessions: Counter
    rejections: Counter
    pool: Gauge


@lru_cache(maxsize=1)
def api_metrics() -> ApiMetrics:
    """Created once per process (prometheus_client registers them globally)."""
    return ApiMetrics(
        requests=Counter("bagula_http_requests_total", "HTTP requests answered", ["method", "route", "status"]),
        latency=Histogram("bagula_http_request_duration_seconds", "Time to answer a request", ["method", "route"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
        sessions=Counter("bagula_ingest_sessions_total", "Sessions received, by outcome "
                         "(stored, duplicate, rejected)", ["outcome"]),
        rejections=Counter("bagula_ingest_rejections_total", "Rejected sessions, by the reason of their first "
                           "fault", ["reason"]),
        pool=Gauge("bagula_db_pool_connections", "Database pool connections, summed over workers",
                   ["state"], multiprocess_mode="livesum"),
    )


def count_ingest(stored: int, duplicates: int, rejection_reasons: list[str]) -> None:
    metrics = api_metrics()
    metrics.sessions.labels("stored").inc(stored)
    metrics.sessions.labels("duplicate").inc(duplicates)
    metrics.sessions.labels("rejected").inc(len(rejection_reasons))
    for reason, count in Tally(rejection_reasons).items():
        metrics.rejections.labels(reason).inc(count)


def observe_pool(pool: AsyncConnectionPool) -> None:
    stats = pool.get_stats()
    gauge = api_metrics().pool
    gauge.labels("size").set(stats.get("pool_size", 0))
    gauge.labels("available").set(stats.get("pool_available", 0))
    gauge.labels("waiting").set(stats.get("requests_waiting", 0))


class RequestTelemetry:
    """Outermost middleware: a request id (the client's X-Request-Id, else a new one, sent
    back on the answer), one JSON log line, and the request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((REQUEST_ID.encode(), request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            metrics = api_metrics()
            metrics.requests.labels(scope["method"], template, str(status)).inc()
            metrics.latency.labels(scope["method"], template).observe(elapsed)
            pool = getattr(scope.get("app"), "state", None)
            if pool is not None and getattr(pool, "pool", None) is not None:
                observe_pool(pool.pool)
            log.info("request", extra={"request_id": request_id, "method": scope["method"], "path": scope["path"],
                                       "route": template, "status": status, "duration_ms": round(elapsed * 1000, 2),
                                       "client": (scope.get("client") or ("",))[0]})


def _request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == REQUEST_ID.encode():
            text = value.decode("latin-1").strip()
            # A client's id is echoed only when it is short and printable.
            if 0 < len(text) <= 128 and text.isprintable():
                return text
    return uuid.uuid4().hex


class MartsLag:
    """Collected at scrape time: how long the oldest session not yet in the marts has waited."""

    def __init__(self, lag_seconds) -> None:
        self._lag_seconds = lag_seconds

    def collect(self):
        family = GaugeMetricFamily("bagula_marts_lag_seconds", "Seconds since the oldest session the marts "
                                   "have not built yet was ingested (0: up to date; -1: unknown)")
        try:
            family.add_metric([], float(self._lag_seconds()))
        except Exception:  # noqa: BLE001 - a scrape must answer even while the database is down
            family.add_metric([], -1.0)
        yield family


def scrape_registry(multiprocess_dir: str, lag_seconds) -> CollectorRegistry:
    """What the metrics port serves: every worker's metrics summed, and the marts' lag."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiprocess_dir)
    registry.register(MartsLag(lag_seconds))
    return registry
