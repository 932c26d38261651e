"""One error body for every answer that is not a success: RFC 9457 problem details
(``application/problem+json``), ``{"type", "title", "status", "detail"}`` plus, where
fields are at fault, ``errors: [{"field", "message"}]``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ingest_api.paging import InvalidParameter
from ingest_api.wire import field_path

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("ingest_api")


class FieldProblem(BaseModel):
    field: str = Field(description="where: a path such as query.limit or turns[0].llmCalls[0].metrics.tokensInput")
    message: str


class Problem(BaseModel):
    """What every error answer carries (RFC 9457)."""

    type: str = Field(default="about:blank", description="always about:blank: the status says what kind")
    title: str = Field(description="the HTTP status phrase")
    status: int
    detail: str = Field(description="what went wrong, for a person")
    errors: list[FieldProblem] | None = Field(default=None, description="the fields at fault, when there are any")


def problem(status: int, detail: str, *, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None, **members: Any) -> JSONResponse:
    """A problem-details response; ``members`` are extension members (e.g. ingest's counts)."""
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                            "detail": detail}
    if errors is not None:
        body["errors"] = errors
    body.update(members)
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


# For every router: error answers are problems (replaces FastAPI's own 422 schema too).
RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": Problem, "description": "the request cannot be served as sent (see detail and errors)",
            "content": {MEDIA_TYPE: {}}},
    503: {"model": Problem, "description": "database unavailable; nothing was stored; retry after Retry-After",
          "content": {MEDIA_TYPE: {}}},
}


def install(app: FastAPI, retry_after_s: int) -> None:
    """Answer every error with a problem."""

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": field_path(tuple(err["loc"])), "message": err["msg"]} for err in exc.errors()]
        return problem(422, "the request's parameters or body are not valid", errors=errors)

    async def invalid_parameter(request: Request, exc: InvalidParameter) -> JSONResponse:
        return problem(422, f"{exc.field}: {exc.message}", errors=[{"field": exc.field, "message": exc.message}])

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return problem(503, "database unavailable; nothing was stored, retry later",
                       headers={"Retry-After": str(retry_after_s)})

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(InvalidParameter, invalid_parameter)
    app.add_exception_handler(psycopg.OperationalError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)
    app.add_exception_handler(Exception, unexpected)
