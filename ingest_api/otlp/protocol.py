"""What OTLP/HTTP clients expect back (the OpenTelemetry protocol specification, "OTLP/HTTP
Response"): an ``ExportTraceServiceResponse`` on 200, with ``partial_success`` set when spans
were rejected, and a ``google.rpc.Status`` for every 4xx and 5xx (a 400 carries a
``google.rpc.BadRequest`` with the fields at fault), always in the request's encoding
(``application/x-protobuf`` or ``application/json``). The statuses follow the specification:
429, 502, 503, 504 are retryable (503 and 429 with ``Retry-After``), every other failure is not.

The rest of the API answers RFC 9457 problems; ``OtlpErrors`` turns those (from the request
guard, the key check, the rate limiter, the pool) into Status messages for ``/v1/traces`` only.
"""

from __future__ import annotations

import orjson
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest_api.otlp.decode import JSON, PROTOBUF

TRACES_PATH = "/v1/traces"
PROBLEM = b"application/problem+json"

# HTTP status -> google.rpc.Code (informative only: OTLP clients go by the HTTP status).
GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    422: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
    504: code_pb2.DEADLINE_EXCEEDED,
}


def media_type(content_type: str | None) -> str | None:
    """The request's OTLP encoding, or None when it is neither."""
    base = (content_type or "").split(";")[0].strip().lower()
    return base if base in (PROTOBUF, JSON) else None


def _encode(message, as_json: bool) -> bytes:
    if as_json:
        return orjson.dumps(json_format.MessageToDict(message))
    return message.SerializeToString()


def export_response(rejected: int, error_message: str, encoding: str) -> bytes:
    """An ExportTraceServiceResponse: partial_success only when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = error_message
    return _encode(response, encoding == JSON)


def status_body(
    http_status: int, message: str, encoding: str, violations: list[tuple[str, str]] | None = None
) -> bytes:
    """A google.rpc.Status; a 400's details carry a BadRequest listing the fields at fault."""
    status = status_pb2.Status(code=GRPC_CODES.get(http_status, code_pb2.UNKNOWN), message=message)
    if http_status == 400:
        bad = error_details_pb2.BadRequest()
        for where, description in violations or [("", message)]:
            bad.field_violations.add(field=where, description=description)
        status.details.add().Pack(bad)
    return _encode(status, encoding == JSON)


class OtlpErrors:
    """For /v1/traces: every problem document becomes a google.rpc.Status in the request's
    encoding (JSON for a request in neither), with the same status and headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != TRACES_PATH:
            await self.app(scope, receive, send)
            return
        content_type = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"content-type"), None)
        encoding = media_type(content_type) or JSON
        held: Message | None = None
        chunks: list[bytes] = []

        async def sending(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", ()))
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(PROBLEM):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                await send_status(held, b"".join(chunks))
                return
            await send(message)

        async def send_status(start: Message, problem: bytes) -> None:
            try:
                detail = str(orjson.loads(problem).get("detail", ""))
            except (orjson.JSONDecodeError, AttributeError):
                detail = problem.decode("utf-8", "replace")
            body = status_body(start["status"], detail, encoding)
            headers = [(k, v) for k, v in start.get("headers", ()) if k not in (b"content-type", b"content-length")]
            headers += [(b"content-type", encoding.encode()), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": start["status"], "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, sending)
