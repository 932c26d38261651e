"""Spans -> one session in the SDK's wire format (pure functions; docs/otlp.md has the tables).

The session a set of spans becomes is stored through the same validation and encoding as a
session the SDK sends, so the API, the marts, detection and the dashboards read it alike.

* **What a span is** (``classify``): an LLM call (``gen_ai.operation.name`` chat,
  text_completion, generate_content, embeddings...; ``openinference.span.kind`` LLM or
  EMBEDDING; or a model name without an operation), a tool call (``execute_tool``; TOOL or
  RETRIEVER), an agent (``invoke_agent``, ``create_agent``; AGENT) or anything else.
* **Turns**: every LLM call opens a turn, in start order within its trace; a tool span belongs
  to the turn of the last LLM call of its trace that started before it; a tool call the model
  asked for (in its output messages) without a span of its own becomes a tool call of that
  turn, timed from the end of that LLM call to the start of the LLM call that received its
  result. Tool spans before any LLM call of their trace make a turn of their own. The first
  turn of a trace is triggered by the user's message, the following ones are agent steps.
* **The session**: agent name from ``gen_ai.agent.name``/``agent.name``, else the resource's
  ``service.name``; user from ``user.id``/``enduser.id``; initial request from the first LLM
  call's last user message (else the root span's input, else its name); status ``error`` when
  a root span ended in error, else ``success``; times from the spans.
* Attributes the mapping does not use are kept: each call's under ``otel.attributes``, and
  spans that are neither calls nor agents under the session's ``otel.spans``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from ingest_api import pricing
from ingest_api.otlp import conventions as c

# Session ids: uuid5 in this namespace of "<project>/<session key>[#<segment>]".
NAMESPACE = uuid.UUID("6f1c7e52-2a7d-4c38-9a53-1f3b6a0b7d11")
REMOTE_PARENT = 0x300  # flags: "has is-remote" and "is remote"
SERVER, CONSUMER = 2, 5
STATUS_ERROR = 2
MAX_OTHER_SPANS = 200
MAX_TRACE_IDS = 100


def session_key(conversation_id: str | None, trace_id: bytes) -> str:
    return f"conversation:{conversation_id}" if conversation_id else f"trace:{trace_id.hex()}"


def session_id(project_id: uuid.UUID, key: str, segment: int) -> uuid.UUID:
    """Deterministic: assembling the same spans again names the same session (stored once)."""
    return uuid.uuid5(NAMESPACE, f"{project_id}/{key}" + (f"#{segment}" if segment else ""))


def _ms(ns: int) -> float | int:
    """ns since the epoch -> epoch ms, to the microsecond (what timestamptz keeps)."""
    micros = ns // 1000
    return micros // 1000 if micros % 1000 == 0 else micros / 1000


def _maybe_json(value: Any) -> Any:
    """JSON text inside an attribute, parsed; as it is when it does not parse, or when parsing
    would make a NUL character (PostgreSQL stores no NUL; every other value of a span was
    checked when it landed, and orjson refuses lone surrogates and non-finite numbers)."""
    if isinstance(value, str) and value[:1] in ("[", "{") and "\\u0000" not in value:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _first(attributes: dict[str, Any], keys: tuple[str, ...], kind: type | tuple[type, ...] = str) -> Any:
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, kind) and not isinstance(value, bool) and value != "":
            return value
    return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


# ---------------------------------------------------------------- spans


@dataclass
class SpanView:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    flags: int
    status_code: int
    status_message: str | None
    attributes: dict[str, Any]
    events: list | None
    links: list | None
    resource: dict[str, Any]
    scope: str | None
    parent_known: bool
    role: str = c.OTHER

    @classmethod
    def of(cls, row: dict[str, Any]) -> "SpanView":
        span = cls(
            row["trace_id"],
            row["span_id"],
            row["parent_span_id"],
            row["name"],
            row["kind"],
            row["start_unix_nano"],
            row["end_unix_nano"],
            row["flags"],
            row["status_code"],
            row["status_message"],
            row["attributes"] or {},
            row["events"],
            row["links"],
            row["resource"] or {},
            row["scope_name"],
            row["parent_known"],
        )
        span.role = classify(span.attributes)
        return span

    @property
    def failed(self) -> bool:
        return self.status_code == STATUS_ERROR

    def otel(self, unused: dict[str, Any]) -> dict[str, Any]:
        """Where the call came from, with the attributes the mapping did not use."""
        info: dict[str, Any] = {"traceId": self.trace_id.hex(), "spanId": self.span_id.hex(), "name": self.name}
        if self.parent_span_id:
            info["parentSpanId"] = self.parent_span_id.hex()
        if self.scope:
            info["scope"] = self.scope
        if unused:
            info["attributes"] = unused
        if self.events:
            info["events"] = self.events
        return info


def classify(attributes: dict[str, Any]) -> str:
    operation = attributes.get(c.OPERATION)
    kind = attributes.get(c.OPENINFERENCE_KIND)
    traceloop = attributes.get(c.TRACELOOP_KIND)
    if operation in c.LLM_OPERATIONS or kind in c.OI_LLM_KINDS or isinstance(attributes.get(c.LLM_REQUEST_TYPE), str):
        return c.LLM
    if operation in c.TOOL_OPERATIONS or kind in c.OI_TOOL_KINDS or traceloop == "tool":
        return c.TOOL
    if operation in c.AGENT_OPERATIONS or kind in c.OI_AGENT_KINDS or traceloop in ("agent", "workflow"):
        return c.AGENT
    if (
        operation is None
        and kind is None
        and any(isinstance(attributes.get(k), str) for k in (c.RESPONSE_MODEL, c.REQUEST_MODEL, c.OI_MODEL))
    ):
        return c.LLM
    return c.OTHER


def is_entry(span: SpanView) -> bool:
    """A span whose parent is not ours to wait for: none, a remote one, or a server/consumer span."""
    return not span.parent_span_id or span.flags & REMOTE_PARENT == REMOTE_PARENT or span.kind in (SERVER, CONSUMER)


def complete(spans: list[SpanView]) -> bool:
    """Every span's parent has arrived (or is not ours to wait for)."""
    return all(s.parent_known or is_entry(s) for s in spans)


# ---------------------------------------------------------------- messages


def _unflatten(attributes: dict[str, Any], prefix: str, used: set[str]) -> list[Any]:
    """``prefix`` + "0.message.role" = "user", ... -> [{"message": {"role": "user"}}]."""
    tree: dict[Any, Any] = {}
    for key, value in attributes.items():
        if not key.startswith(prefix):
            continue
        used.add(key)
        node = tree
        parts = key[len(prefix) :].split(".")
        for i, part in enumerate(parts):
            step: Any = int(part) if part.isdigit() else part
            if i == len(parts) - 1:
                if isinstance(node, dict):
                    node[step] = value
            else:
                child = node.get(step) if isinstance(node, dict) else None
                if not isinstance(child, dict):
                    child = {}
                    if isinstance(node, dict):
                        node[step] = child
                node = child
    return _listify(tree) if tree else []


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(k, int) for k in node):
        return [_listify(node[k]) for k in sorted(node)]
    return {str(k): _listify(v) for k, v in node.items()}


def _openinference_messages(items: list[Any]) -> list[dict[str, Any]]:
    """OpenInference's flattened messages, in the chat-completions shape."""
    messages = []
    for item in items:
        message = item.get("message") if isinstance(item, dict) else None
        if not isinstance(message, dict):
            continue
        out = {k: v for k, v in message.items() if k not in ("tool_calls", "contents")}
        contents = message.get("contents")
        if isinstance(contents, list) and "content" not in out:
            texts = [(part.get("message_content") or {}).get("text") for part in contents if isinstance(part, dict)]
            out["content"] = "".join(t for t in texts if isinstance(t, str))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            out["tool_calls"] = [call.get("tool_call", call) if isinstance(call, dict) else call for call in calls]
        messages.append(out)
    return messages


def _event_messages(events: list | None, output: bool) -> list[dict[str, Any]]:
    """Messages recorded as span events by the older GenAI conventions."""
    messages = []
    for event in events or ():
        role = c.MESSAGE_EVENTS.get(event.get("name")) if isinstance(event, dict) else None
        if role is None or (event["name"] == "gen_ai.choice") != output:
            continue
        attributes = event.get("attributes") or {}
        body = _maybe_json(attributes.get("content", attributes.get("gen_ai.event.content")))
        if isinstance(body, dict) and "message" in body:
            body = body["message"]
        message = dict(body) if isinstance(body, dict) else {"content": body}
        message.setdefault("role", role)
        messages.append(message)
    return messages


def _messages(span: SpanView, used: set[str], output: bool) -> Any:
    a = span.attributes
    key = c.OUTPUT_MESSAGES if output else c.INPUT_MESSAGES
    if key in a:
        used.add(key)
        found = _maybe_json(a[key])
        if not output and c.SYSTEM_INSTRUCTIONS in a and isinstance(found, list):
            used.add(c.SYSTEM_INSTRUCTIONS)
            found = [{"role": "system", "parts": _maybe_json(a[c.SYSTEM_INSTRUCTIONS])}, *found]
        return found
    flattened = _unflatten(a, c.OI_OUTPUT_MESSAGES if output else c.OI_INPUT_MESSAGES, used)
    if flattened:
        return _openinference_messages(flattened)
    flattened = _unflatten(a, c.OPENLLMETRY_COMPLETION if output else c.OPENLLMETRY_PROMPT, used)
    if flattened:
        return [m for m in flattened if isinstance(m, dict)]
    events = _event_messages(span.events, output)
    if events:
        return events
    raw = _maybe_json(a.get(c.OUTPUT_VALUE if output else c.INPUT_VALUE))
    if isinstance(raw, dict):
        if not output and isinstance(raw.get("messages"), list):
            used.add(c.INPUT_VALUE)
            return raw["messages"]
        choices = raw.get("choices")
        if output and isinstance(choices, list):
            used.add(c.OUTPUT_VALUE)
            return [choice.get("message") for choice in choices if isinstance(choice, dict)]
    return None


def _text(message: Any) -> str | None:
    """The text of a message in any of the shapes above."""
    if not isinstance(message, dict):
        return message if isinstance(message, str) else None
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = message.get("parts") if isinstance(message.get("parts"), list) else content
    if isinstance(parts, list):
        texts = [p.get("content", p.get("text")) for p in parts if isinstance(p, dict) and p.get("type") == "text"]
        texts = [t for t in texts if isinstance(t, str)]
        return "".join(texts) if texts else None
    return None


def _last_user_text(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message)
    return None


def _assistant_text(messages: Any) -> str | None:
    if isinstance(messages, list):
        for message in messages:
            text = _text(message)
            if text:
                return text
    return None


def _tool_requests(messages: Any) -> list[dict[str, Any]]:
    """Tool calls the model asked for: [{id, name, arguments}]."""
    found = []
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        for part in message.get("parts") or ():
            if isinstance(part, dict) and part.get("type") == "tool_call":
                found.append({"id": part.get("id"), "name": part.get("name"), "arguments": part.get("arguments")})
        for call in message.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            function = call.get("function") if isinstance(call.get("function"), dict) else call
            found.append(
                {
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": _maybe_json(function.get("arguments")),
                }
            )
    return [f for f in found if isinstance(f["name"], str) and f["name"]]


def _tool_responses(messages: Any) -> dict[str, Any]:
    """Tool results sent back to the model: {tool call id: result}."""
    found: dict[str, Any] = {}
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        for part in message.get("parts") or ():
            if isinstance(part, dict) and part.get("type") == "tool_call_response" and isinstance(part.get("id"), str):
                found[part["id"]] = part.get("response")
        if message.get("role") == "tool" and isinstance(message.get("tool_call_id"), str):
            found[message["tool_call_id"]] = _maybe_json(message.get("content"))
    return found


# ---------------------------------------------------------------- calls


def _error(span: SpanView) -> str | None:
    if not span.failed:
        return None
    if span.status_message:
        return span.status_message
    for event in span.events or ():
        if isinstance(event, dict) and event.get("name") == "exception":
            message = (event.get("attributes") or {}).get("exception.message")
            if isinstance(message, str) and message:
                return message
    error_type = span.attributes.get(c.ERROR_TYPE)
    return error_type if isinstance(error_type, str) and error_type else "error"


def _unused(attributes: dict[str, Any], used: set[str]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if k not in used}


SESSION_LEVEL = (
    c.OPERATION,
    c.OPENINFERENCE_KIND,
    c.TRACELOOP_KIND,
    *c.SESSION_KEYS,
    *c.USER_IDS,
    c.OI_METADATA,
    c.OI_TAGS,
)


@dataclass
class LlmCall:
    span: SpanView
    call: dict[str, Any]
    user_text: str | None
    requests: list[dict[str, Any]]
    responses: dict[str, Any]


def llm_call(span: SpanView) -> LlmCall:
    a = span.attributes
    used = set(SESSION_LEVEL)
    provider = _first(a, c.PROVIDERS) or "unknown"
    request_model = a.get(c.REQUEST_MODEL)
    model = _first(a, (c.RESPONSE_MODEL, c.REQUEST_MODEL, c.OI_MODEL)) or "unknown"
    used.update(c.PROVIDERS + (c.RESPONSE_MODEL, c.REQUEST_MODEL, c.OI_MODEL, c.LLM_REQUEST_TYPE))
    tokens_in = _first(a, c.INPUT_TOKENS, int)
    tokens_out = _first(a, c.OUTPUT_TOKENS, int)
    metrics: dict[str, Any] = {
        "tokensInput": tokens_in,
        "tokensOutput": tokens_out,
        "tokensTotal": _first(a, c.TOTAL_TOKENS, int),
        "costUsd": _first(a, c.COSTS, (int, float)),
        "latencyMs": (span.end_ns - span.start_ns) / 1e6,
    }
    cache_read, cache_write = _first(a, c.CACHE_READ_TOKENS, int), _first(a, c.CACHE_WRITE_TOKENS, int)
    reasoning = _first(a, c.REASONING_TOKENS, int)
    for name, value in (
        ("tokensCacheRead", cache_read),
        ("tokensCacheWrite", cache_write),
        ("tokensReasoning", reasoning),
    ):
        if value is not None:
            metrics[name] = value
    used.update(
        c.INPUT_TOKENS
        + c.OUTPUT_TOKENS
        + c.TOTAL_TOKENS
        + c.COSTS
        + c.CACHE_READ_TOKENS
        + c.CACHE_WRITE_TOKENS
        + c.REASONING_TOKENS
    )
    provider, model = _clip(provider, 50), _clip(model, 100)
    if metrics["costUsd"] is None:
        # The price table's figure, as the marts will carry it (the API shows what was sent and
        # this); encode() stores the same estimate in llm_calls.estimated_cost_usd.
        found = pricing.estimate(provider, model, tokens_in, tokens_out, cache_read, cache_write)
        metrics["estimatedCostUsd"] = float(found.cost_usd) if found else None
        metrics["costSource"] = "price_table" if found else "unknown"
        if found:
            metrics["priceSource"] = found.source
    inputs, outputs = _messages(span, used, output=False), _messages(span, used, output=True)
    if inputs is not None:  # the raw request payload says the same again
        used.update((c.INPUT_VALUE, "input.mime_type"))
    if outputs is not None:
        used.update((c.OUTPUT_VALUE, "output.mime_type"))
    finish = _first(a, c.FINISH_REASONS, (str, list))
    used.update(c.FINISH_REASONS)
    response: Any = outputs
    if finish is not None:
        response = {"messages": outputs, "finishReasons": finish if isinstance(finish, list) else [finish]}
    call: dict[str, Any] = {
        "callId": span.span_id.hex(),
        "provider": provider,
        "model": model,
        "startTime": _ms(span.start_ns),
        "endTime": _ms(span.end_ns),
        "messages": inputs,
        "response": response,
        "metrics": metrics,
    }
    if isinstance(request_model, str) and request_model != model:
        call["requestModel"] = request_model
    error = _error(span)
    if error:
        call["error"] = error
    call["otel"] = span.otel(_unused(a, used))
    return LlmCall(span, call, _last_user_text(inputs), _tool_requests(outputs), _tool_responses(inputs))


def tool_call(span: SpanView, seen_ids: set[str]) -> dict[str, Any]:
    a = span.attributes
    used = set(SESSION_LEVEL)
    call_id = _first(a, c.TOOL_CALL_IDS)
    if call_id is None or call_id in seen_ids or len(call_id) > 255:
        call_id = span.span_id.hex()
    seen_ids.add(call_id)
    name = _first(a, c.TOOL_NAMES) or span.name or "tool"
    arguments = _first(a, c.TOOL_ARGUMENTS, (str, dict, list))
    result = _first(a, c.TOOL_RESULTS, (str, dict, list))
    used.update(c.TOOL_NAMES + c.TOOL_CALL_IDS + c.TOOL_ARGUMENTS + c.TOOL_RESULTS)
    if arguments is None and c.INPUT_VALUE in a:
        arguments = a[c.INPUT_VALUE]
        used.update((c.INPUT_VALUE, "input.mime_type"))
    if result is None and c.OUTPUT_VALUE in a:
        result = a[c.OUTPUT_VALUE]
        used.update((c.OUTPUT_VALUE, "output.mime_type"))
    tool = {
        "toolId": call_id,
        "toolName": _clip(name, 255),
        "arguments": _maybe_json(arguments),
        "startTime": _ms(span.start_ns),
        "endTime": _ms(span.end_ns),
        "result": _maybe_json(result),
        "error": _error(span),
        "latencyMs": (span.end_ns - span.start_ns) / 1e6,
    }
    tool["otel"] = span.otel(_unused(a, used))
    return tool


def requested_tool_call(
    request: dict[str, Any], asked: LlmCall, answered: LlmCall | None, seen_ids: set[str]
) -> dict[str, Any]:
    """A tool call known only from the model's output (no span of its own): timed from the end of
    the call that asked for it to the start of the call that got its result."""
    call_id = request["id"] if isinstance(request["id"], str) and request["id"] not in seen_ids else None
    call_id = call_id or f"{asked.span.span_id.hex()}-tool-{len(seen_ids)}"
    seen_ids.add(call_id)
    start = asked.span.end_ns
    end = answered.span.start_ns if answered is not None and answered.span.start_ns >= start else None
    return {
        "toolId": _clip(call_id, 255),
        "toolName": _clip(request["name"], 255),
        "arguments": request["arguments"],
        "startTime": _ms(start),
        "endTime": _ms(end) if end is not None else None,
        "result": answered.responses.get(request["id"]) if answered is not None else None,
        "error": None,
        "latencyMs": (end - start) / 1e6 if end is not None else None,
        "otel": {"source": "requested by the model", "requestedBy": asked.span.span_id.hex()},
    }


# ---------------------------------------------------------------- the session


def _turns(spans: list[SpanView]) -> tuple[list[dict[str, Any]], list[LlmCall]]:
    by_trace: dict[bytes, list[SpanView]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    traces = sorted(by_trace.values(), key=lambda group: min((s.start_ns, s.span_id) for s in group))
    turns: list[dict[str, Any]] = []
    seen_tool_ids: set[str] = set()
    per_trace = []
    for group in traces:
        group.sort(key=lambda s: (s.start_ns, s.span_id))
        per_trace.append((group, [llm_call(s) for s in group if s.role == c.LLM]))
    # A tool's result may come back in the next trace of a conversation (one trace per request).
    all_calls = [call for _, calls in per_trace for call in calls]
    position_of = {id(call): n for n, call in enumerate(all_calls)}
    for group, calls in per_trace:
        tools = [s for s in group if s.role == c.TOOL]
        # turn index (-1: before any LLM call) -> tool spans
        attached: dict[int, list[SpanView]] = {}
        for tool in tools:
            index = -1
            for i, call in enumerate(calls):
                if call.span.start_ns <= tool.start_ns:
                    index = i
            attached.setdefault(index, []).append(tool)
        root = group[0]
        if -1 in attached:
            tool_calls = [tool_call(t, seen_tool_ids) for t in attached[-1]]
            turns.append(
                _turn(
                    attached[-1][0].span_id.hex(),
                    attached[-1][0].start_ns,
                    {"type": "user_message", "content": _root_input(root)},
                    [],
                    None,
                    tool_calls,
                )
            )
        for i, call in enumerate(calls):
            tool_spans = attached.get(i, [])
            tool_calls = [tool_call(t, seen_tool_ids) for t in tool_spans]
            span_ids = {t["toolId"] for t in tool_calls}
            answered = next(
                (
                    later
                    for later in all_calls[position_of[id(call)] + 1 :]
                    if any(r["id"] in later.responses for r in call.requests)
                ),
                None,
            )
            for request in call.requests:
                if request["id"] not in span_ids:
                    tool_calls.append(requested_tool_call(request, call, answered, seen_tool_ids))
                    continue
                # The tool's span and the model's request are one call: what the span left
                # out, the messages say.
                spanned = next(t for t in tool_calls if t["toolId"] == request["id"])
                if spanned["arguments"] is None:
                    spanned["arguments"] = request["arguments"]
                if spanned["result"] is None and answered is not None:
                    spanned["result"] = answered.responses.get(request["id"])
            first = i == 0 and -1 not in attached
            trigger = (
                {"type": "user_message", "content": call.user_text if call.user_text is not None else _root_input(root)}
                if first
                else {"type": "agent_step", "content": None}
            )
            turns.append(
                _turn(
                    call.span.span_id.hex(),
                    call.span.start_ns,
                    trigger,
                    [call.call],
                    _assistant_text(
                        call.call["response"]["messages"]
                        if isinstance(call.call["response"], dict)
                        else call.call["response"]
                    ),
                    tool_calls,
                )
            )
    for number, turn in enumerate(turns, start=1):
        turn["turnNumber"] = number
    return turns, all_calls


def _turn(
    turn_id: str,
    start_ns: int,
    trigger: dict[str, Any],
    llm_calls: list[dict[str, Any]],
    message: str | None,
    tool_calls: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "turnId": turn_id,
        "turnNumber": 0,
        "timestamp": _ms(start_ns),
        "trigger": trigger,
        "llmCalls": llm_calls,
        "agentResponse": {"message": message, "toolCalls": tool_calls},
    }


def _root_input(root: SpanView) -> Any:
    value = root.attributes.get(c.INPUT_VALUE)
    return _maybe_json(value) if value is not None else None


def _session_attribute(spans: list[SpanView], keys: tuple[str, ...], kind: type = str) -> Any:
    for span in spans:
        value = _first(span.attributes, keys, kind)
        if value is not None:
            return value
    return None


def build(project_id: uuid.UUID, key: str, segment: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The wire-format session of these spans (all of one session key)."""
    spans = sorted((SpanView.of(r) for r in rows), key=lambda s: (s.start_ns, s.span_id))
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_span_id or s.parent_span_id not in ids]
    turns, calls = _turns(spans)
    agents = [s for s in spans if s.role == c.AGENT]
    agent = (
        _session_attribute(agents, c.AGENT_NAMES)
        or _session_attribute(spans, c.AGENT_NAMES)
        or (agents[0].name if agents and agents[0].name else None)
        or _first(roots[0].resource, (c.SERVICE_NAME,))
        or roots[0].name
        or "unknown_agent"
    )
    request = next((call.user_text for call in calls if call.user_text), None)
    if request is None:
        root_input = _root_input(roots[0])
        request = (
            root_input
            if isinstance(root_input, str)
            else (orjson.dumps(root_input).decode() if root_input is not None else roots[0].name)
        )
    failed = [s for s in roots if s.failed]
    last_call = calls[-1].call if calls else None
    result = _maybe_json(roots[-1].attributes.get(c.OUTPUT_VALUE))
    if result is None and last_call is not None:
        response = last_call["response"]
        result = _assistant_text(response["messages"] if isinstance(response, dict) else response)
    outcome: dict[str, Any] = {"status": "error" if failed else "success", "result": result}
    if failed:
        outcome["error"] = _error(failed[0])
    metadata = _session_attribute(spans, (c.OI_METADATA,), (str, dict))
    metadata = _maybe_json(metadata)
    tags = _session_attribute(spans, (c.OI_TAGS,), list)
    trace_ids = sorted({s.trace_id.hex() for s in spans})
    kind, _, name = key.partition(":")
    others = [s for s in spans if s.role in (c.OTHER, c.AGENT)]
    otel: dict[str, Any] = {
        "sessionKey": key,
        "segment": segment,
        "traceIds": trace_ids[:MAX_TRACE_IDS],
        "traceCount": len(trace_ids),
        "spanCount": len(spans),
        "resource": roots[0].resource,
        "spans": [
            {
                **s.otel(_unused(s.attributes, set(SESSION_LEVEL) | set(c.AGENT_NAMES))),
                "kind": s.kind,
                "startTime": _ms(s.start_ns),
                "endTime": _ms(s.end_ns),
                "status": {0: "unset", 1: "ok", 2: "error"}.get(s.status_code, str(s.status_code)),
            }
            for s in others[:MAX_OTHER_SPANS]
        ],
    }
    if kind == "conversation":
        otel["conversationId"] = name
    session: dict[str, Any] = {
        "sessionId": str(session_id(project_id, key, segment)),
        "agentName": _clip(agent, 255),
        "userId": _clip(user, 255) if isinstance(user := _session_attribute(spans, c.USER_IDS), str) else None,
        "initialRequest": request if isinstance(request, str) else str(request),
        "startTime": _ms(min(s.start_ns for s in spans)),
        "endTime": _ms(max(s.end_ns for s in spans)),
        "metadata": metadata if isinstance(metadata, dict) else None,
        "tags": [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else None,
        "parentSessionId": None,
        "turns": turns,
        "finalOutcome": outcome,
        "otel": otel,
    }
    return session
