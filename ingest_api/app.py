"""The FastAPI application: one async connection pool, small routers per resource, one
response convention (``ingest_api.schemas``) and one error shape (``ingest_api.problems``)."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ingest_api import problems
from ingest_api.access import Access
from ingest_api.guard import RequestGuard
from ingest_api.otlp.assembler import Assembler, Exports
from ingest_api.otlp.protocol import OtlpErrors
from ingest_api.routes import (
    data_policy,
    detection,
    erasures,
    health,
    incidents,
    ingest,
    metrics,
    search,
    sessions,
    traces,
)
from ingest_api.settings import ApiSettings, get_api_settings
from ingest_api.telemetry import RequestTelemetry

DESCRIPTION = """Every `/v1` call needs `Authorization: Bearer <key>`; the key decides the project.

Responses use camelCase field names, times in epoch milliseconds and `nextCursor` for the
next page of a list. Errors are RFC 9457 problem details (`application/problem+json`):
`{"type", "title", "status", "detail", "errors": [{"field", "message"}]}`. Time parameters
(`since`, `until`, a baseline's `from`/`to`) take epoch milliseconds or ISO 8601 with a zone."""


async def without_jit(conn: AsyncConnection) -> None:
    """No JIT compilation for the API's queries: each reads a page or an aggregate in a few ms,
    and a plan whose estimate passes jit_above_cost (the session list's lateral counts do) spent
    70 ms compiling for 3 ms of work (a 500-session page at a million sessions)."""
    await conn.execute("set jit = off")
    await conn.commit()


def tune_garbage_collector() -> None:
    """A parsed batch is hundreds of thousands of objects, and the default thresholds collect
    every 700 allocations, walking the app's own objects (routes, models, schemas) again in each
    full collection. Startup's objects are frozen out of collection; young objects are collected
    every 50,000 allocations. Reference counting still frees almost everything a request makes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_api_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = AsyncConnectionPool(
            settings.require_database_url(),
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.db_timeout_s,
            # A connection broken by a database restart is replaced, not handed out.
            check=AsyncConnectionPool.check_connection,
            kwargs={"connect_timeout": max(1, int(settings.db_timeout_s))},
            configure=without_jit,
            open=False,
        )
        # Start even while the database is down: /healthz answers, /readyz and
        # data endpoints say 503 until it is back.
        await pool.open(wait=False)
        app.state.settings = settings
        app.state.pool = pool
        # OpenTelemetry spans -> sessions, in the background (docs/otlp.md).
        app.state.exports = Exports()
        assembler = Assembler(pool, settings, app.state.exports).start() if settings.otlp_assembler else None
        tune_garbage_collector()
        try:
            yield
        finally:
            if assembler is not None:
                await assembler.stop()
            await pool.close()

    app = FastAPI(
        title="Bagula",
        version="0.1.0",
        summary="Observability for AI agents in production: ingest and query agent sessions.",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    problems.install(app, settings.retry_after_s)
    access = Access(settings)
    app.state.access = access
    app.add_middleware(RequestGuard, settings=settings, access=access)
    # /v1/traces answers OTLP's google.rpc.Status, not problem documents.
    app.add_middleware(OtlpErrors)
    # Outermost: every answer, refusals included, is counted, logged and carries a request id.
    app.add_middleware(RequestTelemetry)
    for module in (health, ingest, sessions, search, metrics, detection, incidents, erasures, data_policy):
        app.include_router(module.router, responses=problems.RESPONSES)
    # OTLP/HTTP: its own answers (google.rpc.Status), not problems.
    app.include_router(traces.router)

    def openapi() -> dict:
        # The ingest body is parsed by hand (gzip, limits, per-session errors);
        # publish its models so /docs still shows the wire format.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                 description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(ingest.OPENAPI_DEFS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
