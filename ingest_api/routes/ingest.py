"""POST /v1/sessions/ingest: batches of completed sessions from the SDK."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter
from typing_extensions import NotRequired, TypedDict

from ingest_api.body import parse_envelope, read_body
from ingest_api.deps import IngestKey, PoolDep, SettingsDep
from ingest_api.problems import MEDIA_TYPE, Problem, problem
from ingest_api.settings import ApiSettings
from ingest_api.store import sessions as session_store
from ingest_api.store.sessions import EncodedSession
from ingest_api.telemetry import count_ingest
from ingest_api.wire import FieldError, Rejection, Session, SessionLimits, raw_session_id, validate_session

router = APIRouter(tags=["ingest"])

# About 5 ms of validation between chances for other requests to run.
YIELD_EVERY_SESSIONS = 5


class IngestRequest(TypedDict):
    """The envelope the SDK posts (optionally gzip-compressed)."""

    sessions: list[Session]
    timestamp: NotRequired[Annotated[float | None, Field(description="client send time, epoch ms")]]


class ErrorItem(BaseModel):
    field: str = Field(description="path in the session, e.g. turns[0].llmCalls[0].metrics.tokensInput")
    message: str


class RejectedSession(BaseModel):
    index: int = Field(description="position of the session in the request's sessions array")
    sessionId: Any = None
    errors: list[ErrorItem] = Field(description="the first faults found (at most BAGULA_MAX_ERRORS_PER_SESSION, "
                                                "fewer once the answer has listed as many as its request was big)")
    errorCount: int = Field(description="every fault found in the session, listed or not")


class IngestResult(BaseModel):
    stored: int = Field(description="sessions written by this request")
    duplicates: int = Field(description="sessions already stored (or repeated in the batch)")
    rejected: list[RejectedSession] = Field(default_factory=list)


class IngestProblem(Problem, IngestResult):
    """422 when every session of the batch was rejected: a problem with the batch's counts."""


def request_body_openapi() -> tuple[dict, dict]:
    """OpenAPI for the body we parse by hand (per-session validation, gzip, size limit)."""
    schema = TypeAdapter(IngestRequest).json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    extra = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
            "description": "May be sent with Content-Encoding: gzip.",
        }
    }
    return extra, defs


OPENAPI_EXTRA, OPENAPI_DEFS = request_body_openapi()


def _rejections_json(rejected: list[Rejection], per_session: int, budget: int) -> list[dict]:
    """The rejections, with their errors listed up to ``per_session`` each and ``budget`` in all:
    an answer never grows much larger than the request that caused it."""
    out = []
    for r in rejected:
        shown = r.errors[: max(0, min(per_session, budget))]
        budget -= len(shown)
        out.append({"index": r.index, "sessionId": r.session_id,
                    "errors": [{"field": e.field, "message": e.message} for e in shown],
                    "errorCount": len(r.errors)})
    return out


def _limits(settings: ApiSettings) -> SessionLimits:
    now_ms = time.time() * 1000
    return SessionLimits(
        max_turns=settings.max_turns, max_llm_calls=settings.max_llm_calls, max_tool_calls=settings.max_tool_calls,
        max_tags=settings.max_tags, earliest_ms=now_ms - settings.max_session_age_days * 86_400_000,
        latest_ms=now_ms + settings.max_session_future_s * 1000,
    )


@router.post(
    "/v1/sessions/ingest",
    summary="Store a batch of completed sessions, exactly once",
    response_model=IngestResult,
    openapi_extra=OPENAPI_EXTRA,
    responses={
        207: {"model": IngestResult, "description": "some sessions were rejected, the rest stored"},
        400: {"model": Problem, "description": "malformed JSON or gzip", "content": {MEDIA_TYPE: {}}},
        401: {"model": Problem, "description": "missing or unknown API key", "content": {MEDIA_TYPE: {}}},
        413: {"model": Problem, "description": "body or batch over the limit", "content": {MEDIA_TYPE: {}}},
        415: {"model": Problem, "description": "Content-Encoding other than gzip", "content": {MEDIA_TYPE: {}}},
        422: {"model": IngestProblem, "description": "not the envelope (no counts), or every session rejected",
              "content": {MEDIA_TYPE: {}}},
    },
)
async def ingest_sessions(
    request: Request, principal: IngestKey, settings: SettingsDep, pool: PoolDep
) -> JSONResponse:
    body = await read_body(request, settings.max_body_bytes)
    envelope = parse_envelope(body, settings.max_batch_sessions)
    limits = _limits(settings)

    accepted: list[tuple[int, EncodedSession]] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(envelope.sessions):
        if index and index % YIELD_EVERY_SESSIONS == 0:
            # Validation is CPU work on the event loop: let waiting requests (reads, other
            # batches' database round trips) in between, not only after the whole batch.
            await asyncio.sleep(0)
        session, errors = validate_session(raw, check_values=envelope.exact, limits=limits, typed=envelope.typed)
        if session is not None:
            try:
                accepted.append((index, session_store.encode(principal, session, settings.max_metadata_bytes)))
                continue
            except session_store.Unstorable as exc:
                errors = [FieldError(exc.field, exc.message, "unstorable")]
        rejected.append(Rejection(index, raw_session_id(raw), errors))

    stored = duplicates = 0
    if accepted:
        # The connection is taken only now: parsing a large body holds none.
        async with pool.connection() as conn:
            outcome = await session_store.ingest(conn, principal, [s for _, s in accepted])
        stored, duplicates = outcome.stored, outcome.duplicates
        for index, s in accepted:
            message = outcome.refused.pop(s.session_id, None)
            if message is not None:
                rejected.append(Rejection(index, str(s.session_id), [FieldError("", message, "database")]))
        rejected.sort(key=lambda r: r.index)

    count_ingest(stored, duplicates, [r.errors[0].reason if r.errors else "schema" for r in rejected])
    budget = max(100, len(body) // 100)
    result = {"stored": stored, "duplicates": duplicates,
              "rejected": _rejections_json(rejected, settings.max_errors_per_session, budget)}
    if rejected and not (stored or duplicates):
        return problem(422, f"every session of the batch was rejected ({len(rejected)}); nothing was stored",
                       **result)
    return JSONResponse(result, status_code=207 if rejected else 200)
