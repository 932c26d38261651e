"""POST /v1/traces: OTLP/HTTP trace exports from OpenTelemetry exporters (docs/otlp.md).

Authorised like every /v1 call (``Authorization: Bearer <key>``, which OTLP exporters send
through ``OTEL_EXPORTER_OTLP_HEADERS``; a key with the ingest scope), with the same body limit (gzip included) and rate
limits. The answer is what OTLP clients expect, in the request's encoding: 200 with an
``ExportTraceServiceResponse`` (``partialSuccess`` naming every rejected span and why), a
``google.rpc.Status`` otherwise (400 for a body that is not an export request, 503 with
``Retry-After`` while the database is down: exporters retry)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from ingest_api import redaction
from ingest_api.body import read_body
from ingest_api.deps import IngestKey, PoolDep, SettingsDep
from ingest_api.otlp import decode, protocol
from ingest_api.otlp.telemetry import count_spans
from ingest_api.settings import ApiSettings
from ingest_api.store import spans as span_store

router = APIRouter(tags=["opentelemetry"])
MAX_LISTED = 10

_STATUS = {
    "description": "a google.rpc.Status (OTLP/HTTP), in the request's encoding",
    "content": {decode.PROTOBUF: {}, decode.JSON: {}},
}
OPENAPI_EXTRA = {
    "requestBody": {
        "required": True,
        "description": "An OTLP ExportTraceServiceRequest, binary protobuf or OTLP/JSON; may be sent with "
        "Content-Encoding: gzip.",
        "content": {
            decode.PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            decode.JSON: {
                "schema": {
                    "title": "ExportTraceServiceRequest",
                    "type": "object",
                    "properties": {"resourceSpans": {"type": "array", "items": {"type": "object"}}},
                }
            },
        },
    },
}
RESPONSES = {
    200: {
        "description": "an ExportTraceServiceResponse; partialSuccess counts and explains rejected spans",
        "content": {
            decode.PROTOBUF: {},
            decode.JSON: {
                "schema": {
                    "title": "ExportTraceServiceResponse",
                    "type": "object",
                    "properties": {
                        "partialSuccess": {
                            "type": "object",
                            "properties": {
                                "rejectedSpans": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                                "errorMessage": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
    },
    "4XX": {
        **_STATUS,
        "description": "the request cannot be served as sent (not retried, except 429): "
        "a google.rpc.Status in the request's encoding",
    },
    503: {
        **_STATUS,
        "description": "database unavailable; nothing was stored; retry after Retry-After: "
        "a google.rpc.Status in the request's encoding",
    },
}


async def _in_progress(request: Request) -> AsyncIterator[None]:
    """Counts the export while it is served: this process's assembler gives way to it."""
    exports = request.app.state.exports
    exports.in_progress += 1
    try:
        yield
    finally:
        exports.in_progress -= 1


def _limits(settings: ApiSettings) -> decode.SpanLimits:
    now_ns = time.time_ns()
    return decode.SpanLimits(
        earliest_ns=now_ns - int(settings.max_session_age_days * 86_400 * 1e9),
        latest_ns=now_ns + int(settings.max_session_future_s * 1e9),
    )


def _rejections(decoded: decode.Decoded) -> str:
    rejected = decoded.rejected
    if not rejected:
        return ""
    listed = "; ".join(
        f"{r.where}" + (f" (span {r.span_id})" if r.span_id else "") + f": {r.message}" for r in rejected[:MAX_LISTED]
    )
    more = f"; and {len(rejected) - MAX_LISTED} more" if len(rejected) > MAX_LISTED else ""
    return f"{len(rejected)} of {decoded.total} spans rejected: {listed}{more}"


@router.post(
    "/v1/traces",
    summary="Export spans (OTLP/HTTP): OpenTelemetry traces become sessions",
    responses=RESPONSES,
    openapi_extra=OPENAPI_EXTRA,
    response_class=Response,
    dependencies=[Depends(_in_progress)],
)
async def export_traces(request: Request, principal: IngestKey, settings: SettingsDep, pool: PoolDep) -> Response:
    encoding = protocol.media_type(request.headers.get("content-type"))
    if encoding is None:
        raise HTTPException(415, "Content-Type must be application/x-protobuf or application/json (OTLP/HTTP)")
    body = await read_body(request, settings.max_body_bytes)
    try:
        decoded = decode.decode(body, encoding, _limits(settings))
    except decode.Undecodable as exc:
        return Response(protocol.status_body(400, str(exc), encoding), status_code=400, media_type=encoding)
    stored = duplicates = 0
    if decoded.rows:
        # The project's redaction setting, before anything is stored (docs/privacy.md).
        rows = redaction.redact_span_rows(decoded.rows, principal.redactors)
        # The connection is taken only now: reading and decoding a large body holds none.
        async with pool.connection() as conn:
            landed = await span_store.land(conn, principal, rows, settings.otlp_session_quiet_s)
        stored, duplicates = landed.stored, landed.duplicates
    count_spans(stored, duplicates, len(decoded.rejected))
    return Response(
        protocol.export_response(len(decoded.rejected), _rejections(decoded), encoding), media_type=encoding
    )
