"""OTLP/HTTP trace export bodies -> rows for the raw ``otlp_spans`` table, span by span.

Decoding is the OpenTelemetry project's own generated code: opentelemetry-proto's classes for
binary protobuf, opentelemetry-proto-json's for OTLP/JSON (which implements JSON's deviations
from protobuf's standard mapping: hex trace and span ids, 64-bit integers as strings, unknown
fields ignored; seven times faster than protobuf's pure-Python ``json_format``). A body that is
not an ``ExportTraceServiceRequest`` at all is refused whole (400); a span that cannot be stored
as sent is rejected on its own, with where and why, and the rest of the request is kept (the
partial success of the OTLP specification):

* a protobuf span whose own bytes do not parse (when the rest of the message does): the request
  is read again with each span kept as bytes (a descriptor built here at run time, parsed by
  protobuf, one level at a time), so every other span still lands; likewise a JSON span that
  is not a Span;
* ids of the wrong length or all zero, no end time, an end before the start, times outside the
  window the API accepts sessions in, numbers beyond what the columns hold;
* an attribute of the GenAI or OpenInference conventions with the wrong type (a token count that
  is not an integer, a model name that is not a string: ``conventions``);
* text PostgreSQL cannot store (NUL characters), values nested deeper than JSON can hold.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import methodcaller
from typing import Any

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.proto_json.common.v1.common import InstrumentationScope as JsonScope
from opentelemetry.proto_json.resource.v1.resource import Resource as JsonResource
from opentelemetry.proto_json.trace.v1.trace import Span as JsonSpan

from ingest_api.otlp import conventions as c

PROTOBUF, JSON = "application/x-protobuf", "application/json"
# orjson's own limit on nesting; deeper values cannot be stored as JSON.
MAX_DEPTH = 254
ZERO_TRACE, ZERO_SPAN = bytes(16), bytes(8)
INT32_MAX, UINT32_MAX, INT64_MIN, INT64_MAX = 2**31 - 1, 2**32 - 1, -(2**63), 2**63 - 1


class Undecodable(Exception):
    """The body is not an ExportTraceServiceRequest in the declared encoding (a 400)."""


@dataclass(frozen=True)
class SpanLimits:
    """The window span times must fall in (that of the sessions they become), in ns since the epoch."""

    earliest_ns: int = 0
    latest_ns: int = INT64_MAX


@dataclass(frozen=True)
class Rejection:
    where: str
    span_id: str
    message: str


# Columns of otlp_spans the decoder fills (the store adds project, key and ingest columns).
SPAN_COLUMNS = (
    "trace_id, span_id, parent_span_id, name, kind, start_unix_nano, end_unix_nano, flags,"
    " status_code, status_message, conversation_id, attributes, events, links, resource,"
    " scope_name, scope_version"
)


@dataclass
class Decoded:
    rows: list[tuple] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # spans in the request (stored, duplicate or rejected)
    total: int = 0


class _Fault(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# Which value an AnyValue holds: protobuf's oneof, or the JSON classes' one field that is set.
Which = Callable[[Any], "str | None"]
_pb_which: Which = methodcaller("WhichOneof", "value")
_JSON_KINDS = ("string_value", "int_value", "bool_value", "double_value", "array_value", "kvlist_value", "bytes_value")


def _json_which(v: Any) -> str | None:
    for kind in _JSON_KINDS:
        if getattr(v, kind) is not None:
            return kind
    return None


# ---------------------------------------------------------------- values


def _value(v: Any, path: str, which: Which) -> Any:
    """AnyValue -> a JSON value (bytes as base64 text, non-finite doubles as text)."""
    kind = which(v)
    if kind == "string_value":
        text = v.string_value
        if "\x00" in text:
            raise _Fault(f"{path}: text contains a NUL character")
        return text
    if kind == "int_value":
        number = v.int_value
        if not INT64_MIN <= number <= INT64_MAX:
            raise _Fault(f"{path}: {number} does not fit in 64 bits")
        return number
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        number = v.double_value
        return number if math.isfinite(number) else str(number)
    if kind == "array_value":
        return [_value(item, f"{path}[{i}]", which) for i, item in enumerate(v.array_value.values)]
    if kind == "kvlist_value":
        return _attributes(v.kvlist_value.values, path + ".", which)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def _attributes(pairs: Any, prefix: str, which: Which) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in pairs:
        key = kv.key or ""
        if "\x00" in key:
            raise _Fault(f"{prefix}{key!r}: attribute name contains a NUL character")
        out[key] = _value(kv.value, prefix + key, which) if kv.value is not None else None
    return out


_KIND_NAMES = {
    "string_value": "stringValue",
    "int_value": "intValue",
    "double_value": "doubleValue",
    "bool_value": "boolValue",
    "array_value": "arrayValue",
    "kvlist_value": "kvlistValue",
    "bytes_value": "bytesValue",
}


# Attribute -> the kind its value must have (``conventions``): count, string or number.
_EXPECTED = {
    **dict.fromkeys(c.COUNTS, "count"),
    **dict.fromkeys(c.STRINGS, "string"),
    **dict.fromkeys(c.NUMBERS, "number"),
}


def _typed_attributes(pairs: Any, which: Which) -> dict[str, Any]:
    """Span attributes, with the types of the conventions' attributes checked. Scalars, almost
    every attribute, are converted inline: this runs for every attribute of every span."""
    out: dict[str, Any] = {}
    for kv in pairs:
        key, value = kv.key or "", kv.value
        if "\x00" in key:
            raise _Fault(f"attributes: attribute name {key!r} contains a NUL character")
        kind = which(value) if value is not None else None
        expected = _EXPECTED.get(key)
        if expected is None:
            if kind == "string_value":
                text = value.string_value
                if "\x00" in text:
                    raise _Fault(f"attributes.{key}: text contains a NUL character")
                out[key] = text
            elif kind == "bool_value":
                out[key] = value.bool_value
            else:
                out[key] = _value(value, f"attributes.{key}", which) if value is not None else None
        elif expected == "count":
            if kind != "int_value":
                raise _Fault(
                    f"attribute {key}: a token count must be an integer (intValue), got "
                    f"{_KIND_NAMES.get(kind or '', 'no value')}"
                )
            if not 0 <= value.int_value <= c.INT4_MAX:
                raise _Fault(f"attribute {key}: {value.int_value} is out of range (0..{c.INT4_MAX})")
            out[key] = value.int_value
        elif expected == "string":
            if kind != "string_value":
                raise _Fault(
                    f"attribute {key}: must be a string (stringValue), got {_KIND_NAMES.get(kind or '', 'no value')}"
                )
            out[key] = _value(value, f"attributes.{key}", which)
        else:
            number = value.int_value if kind == "int_value" else value.double_value if kind == "double_value" else None
            if number is None or not math.isfinite(number) or number < 0:
                raise _Fault(
                    f"attribute {key}: a cost must be a finite non-negative number, got "
                    + (_KIND_NAMES.get(kind or "", "no value") if number is None else repr(number))
                )
            out[key] = number
    return out


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise _Fault(f"values nested deeper than {MAX_DEPTH} levels cannot be stored") from None


# ---------------------------------------------------------------- spans


def _row(span: Any, resource: str, scope: Any, limits: SpanLimits, which: Which) -> tuple:
    trace_id, span_id, parent = span.trace_id or b"", span.span_id or b"", span.parent_span_id or b""
    if len(trace_id) != 16 or trace_id == ZERO_TRACE:
        raise _Fault("traceId must be 16 bytes, not all zero")
    if len(span_id) != 8 or span_id == ZERO_SPAN:
        raise _Fault("spanId must be 8 bytes, not all zero")
    if parent and (len(parent) != 8 or parent == ZERO_SPAN):
        raise _Fault("parentSpanId must be empty or 8 bytes, not all zero")
    start, end = span.start_time_unix_nano or 0, span.end_time_unix_nano or 0
    if not end:
        raise _Fault("the span has no end time (only ended spans are exported)")
    if end < start:
        raise _Fault("endTimeUnixNano is before startTimeUnixNano")
    for name, moment in (("startTimeUnixNano", start), ("endTimeUnixNano", end)):
        if not limits.earliest_ns <= moment <= limits.latest_ns:
            raise _Fault(
                f"{name} {moment} is outside the accepted window {limits.earliest_ns}..{limits.latest_ns}"
                " (ns since the epoch; see BAGULA_MAX_SESSION_AGE_DAYS)"
            )
    kind, flags = int(span.kind or 0), span.flags or 0
    status = span.status
    code, message = (int(status.code or 0), status.message or None) if status is not None else (0, None)
    if not (0 <= kind <= INT32_MAX and 0 <= code <= INT32_MAX and 0 <= flags <= UINT32_MAX):
        raise _Fault("kind, status.code or flags out of range")
    name = span.name or ""
    if "\x00" in name:
        raise _Fault("name contains a NUL character")
    if message and "\x00" in message:
        raise _Fault("status.message contains a NUL character")
    attributes = _typed_attributes(span.attributes, which)
    conversation = next((attributes[k] for k in c.SESSION_KEYS if attributes.get(k)), None)
    events = links = None
    if span.events:
        if any("\x00" in (e.name or "") for e in span.events):
            raise _Fault("an event name contains a NUL character")
        events = _json(
            [
                {
                    "name": e.name or "",
                    "timeUnixNano": e.time_unix_nano or 0,
                    "attributes": _attributes(e.attributes, f"events[{i}].attributes.", which),
                }
                for i, e in enumerate(span.events)
            ]
        )
    if span.links:
        links = _json(
            [
                {
                    "traceId": (link.trace_id or b"").hex(),
                    "spanId": (link.span_id or b"").hex(),
                    "attributes": _attributes(link.attributes, f"links[{i}].attributes.", which),
                }
                for i, link in enumerate(span.links)
            ]
        )
    return (
        trace_id,
        span_id,
        parent or None,
        name,
        kind,
        start,
        end,
        flags,
        code,
        message,
        conversation,
        _json(attributes),
        events,
        links,
        resource,
        (scope.name or None) if scope is not None else None,
        (scope.version or None) if scope is not None else None,
    )


def _land(
    out: Decoded, where: str, span: Any, resource: str | _Fault, scope: Any, limits: SpanLimits, which: Which
) -> None:
    out.total += 1
    try:
        if isinstance(resource, _Fault):
            raise resource
        out.rows.append(_row(span, resource, scope, limits, which))
    except _Fault as fault:
        out.rejected.append(Rejection(where, (span.span_id or b"").hex(), fault.message))
    except RecursionError:
        out.rejected.append(Rejection(where, (span.span_id or b"").hex(), "attribute values nested too deeply"))


def _resource_json(resource: Any, which: Which) -> str | _Fault:
    try:
        return _json(_attributes(resource.attributes if resource is not None else (), "resource.attributes.", which))
    except _Fault as fault:
        return _Fault(f"resource: {fault.message}")
    except RecursionError:
        return _Fault("resource: attribute values nested too deeply")


# ---------------------------------------------------------------- protobuf


def _lazy_classes() -> tuple[type, type, type]:
    """The request with each ResourceSpans, ScopeSpans and Span left as bytes: the same wire
    format (length-delimited fields), parsed by protobuf, one level at a time."""
    file = descriptor_pb2.FileDescriptorProto(
        name="bagula/otlp_lazy.proto", package="bagula.otlp_lazy", syntax="proto3"
    )
    shapes = {
        "Request": [("resource_spans", 1, True)],
        "ResourceSpans": [("resource", 1, False), ("scope_spans", 2, True), ("schema_url", 3, False)],
        "ScopeSpans": [("scope", 1, False), ("spans", 2, True), ("schema_url", 3, False)],
    }
    for name, fields in shapes.items():
        message = file.message_type.add(name=name)
        for field_name, number, repeated in fields:
            message.field.add(
                name=field_name,
                number=number,
                type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
                label=(
                    descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                    if repeated
                    else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
                ),
            )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    classes = message_factory.GetMessages([file], pool=pool)
    return tuple(classes[f"bagula.otlp_lazy.{name}"] for name in shapes)  # type: ignore[return-value]


_LAZY: tuple[type, type, type] | None = None


def _decode_protobuf(body: bytes, limits: SpanLimits) -> Decoded:
    out = Decoded()
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except DecodeError:
        return _decode_protobuf_span_by_span(body, limits)
    for r, resource_spans in enumerate(request.resource_spans):
        resource = _resource_json(resource_spans.resource, _pb_which)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            scope = scope_spans.scope
            for i, span in enumerate(scope_spans.spans):
                _land(out, f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]", span, resource, scope, limits, _pb_which)
    return out


def _decode_protobuf_span_by_span(body: bytes, limits: SpanLimits) -> Decoded:
    global _LAZY
    if _LAZY is None:
        _LAZY = _lazy_classes()
    lazy_request, lazy_resource_spans, lazy_scope_spans = _LAZY
    out = Decoded()
    try:
        request = lazy_request.FromString(body)
    except DecodeError as exc:
        raise Undecodable(f"body is not a protobuf ExportTraceServiceRequest: {exc}") from None
    for r, resource_bytes in enumerate(request.resource_spans):
        where = f"resourceSpans[{r}]"
        try:
            resource_spans = lazy_resource_spans.FromString(resource_bytes)
        except DecodeError:
            out.total += 1
            out.rejected.append(
                Rejection(
                    where, "", "this ResourceSpans does not parse (malformed protobuf); its spans cannot be counted"
                )
            )
            continue
        try:
            resource: str | _Fault = _resource_json(Resource.FromString(resource_spans.resource), _pb_which)
        except DecodeError:
            resource = _Fault("resource: malformed protobuf")
        for s, scope_bytes in enumerate(resource_spans.scope_spans):
            try:
                scope_spans = lazy_scope_spans.FromString(scope_bytes)
                scope = InstrumentationScope.FromString(scope_spans.scope)
            except DecodeError:
                out.total += 1
                out.rejected.append(
                    Rejection(f"{where}.scopeSpans[{s}]", "", "this ScopeSpans does not parse (malformed protobuf)")
                )
                continue
            for i, span_bytes in enumerate(scope_spans.spans):
                here = f"{where}.scopeSpans[{s}].spans[{i}]"
                try:
                    span = Span.FromString(span_bytes)
                except DecodeError:
                    out.total += 1
                    out.rejected.append(Rejection(here, "", "the span does not parse (malformed protobuf)"))
                    continue
                _land(out, here, span, resource, scope, limits, _pb_which)
    return out


# ---------------------------------------------------------------- JSON


def _list(data: Any, key: str, where: str) -> list:
    value = data.get(key) if isinstance(data, dict) else None
    if value is None:
        return []
    if not isinstance(value, list):
        raise Undecodable(f"{where}{key} must be a JSON array")
    return value


def _from_json(cls: Any, data: Any, what: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise _Fault(f"{what} must be a JSON object")
    try:
        return cls.from_dict(data)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise _Fault(f"{what} is not valid OTLP/JSON: {str(exc)[:300]}") from None


def _decode_json(body: bytes, limits: SpanLimits) -> Decoded:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Undecodable(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Undecodable("body must be a JSON object (an ExportTraceServiceRequest)")
    out = Decoded()
    for r, resource_spans in enumerate(_list(document, "resourceSpans", "")):
        where = f"resourceSpans[{r}]"
        try:
            resource = _resource_json(
                _from_json(
                    JsonResource,
                    resource_spans.get("resource") if isinstance(resource_spans, dict) else None,
                    "resource",
                ),
                _json_which,
            )
        except _Fault as fault:
            resource = fault
        for s, scope_spans in enumerate(_list(resource_spans, "scopeSpans", f"{where}.")):
            scope_where = f"{where}.scopeSpans[{s}]"
            fault: _Fault | None = None
            try:
                scope = _from_json(
                    JsonScope, scope_spans.get("scope") if isinstance(scope_spans, dict) else None, "scope"
                )
            except _Fault as exc:
                scope, fault = None, exc
            for i, data in enumerate(_list(scope_spans, "spans", f"{scope_where}.")):
                here = f"{scope_where}.spans[{i}]"
                try:
                    if fault is not None:
                        raise fault
                    span = _from_json(JsonSpan, data, "the span")
                except _Fault as exc:
                    span_id = data.get("spanId") if isinstance(data, dict) else None
                    out.total += 1
                    out.rejected.append(Rejection(here, span_id[:32] if isinstance(span_id, str) else "", exc.message))
                    continue
                _land(out, here, span, resource, scope, limits, _json_which)
    return out


def decode(body: bytes, content_type: str, limits: SpanLimits) -> Decoded:
    """The spans of an export request, each as a row or a rejection; Undecodable when the body
    is not an ExportTraceServiceRequest at all."""
    if not body:
        return Decoded()
    return _decode_json(body, limits) if content_type == JSON else _decode_protobuf(body, limits)
