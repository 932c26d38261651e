"""The FastAPI application: one async connection pool, small routers per resource."""

from __future__ import annotations

from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingest_api.routes import detection, health, ingest, metrics, sessions
from ingest_api.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

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
            open=False,
        )
        # Start even while the database is down: /healthz answers, /readyz and
        # data endpoints say 503 until it is back.
        await pool.open(wait=False)
        app.state.settings = settings
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Bagula",
        version="0.1.0",
        summary="Observability for AI agents in production: ingest and query agent sessions.",
        lifespan=lifespan,
    )

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": "database unavailable; nothing was stored, retry later"},
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    app.add_exception_handler(psycopg.OperationalError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)

    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(sessions.router)
    app.include_router(metrics.router)
    app.include_router(detection.router)

    def openapi() -> dict:
        # The ingest body is parsed by hand (gzip, limits, per-session errors);
        # publish its models so /docs still shows the wire format.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(ingest.OPENAPI_DEFS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
