"""POST /v1/traces: OpenTelemetry exporters and instrumentations as the producers, their spans
read back as Bagula sessions (docs/otlp.md).

The producers are the real thing: the OpenTelemetry SDK with its OTLP/HTTP exporters (protobuf
and JSON), the official OpenAI instrumentation (opentelemetry-instrumentation-openai-v2) and
OpenInference's, both wrapping the real ``openai`` client pointed at a local server that
answers like the chat completions API. Costs are checked against genai-prices' own
``calc_price`` (the reference implementation, not the API's fast path)."""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psycopg
import pytest
import requests
from genai_prices import Usage, calc_price
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonExporter
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as ProtobufExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.support.services import ApiServer, new_tenant, wait_for

TRACES = "/v1/traces"
PROTOBUF, JSON = "application/x-protobuf", "application/json"


# ---------------------------------------------------------------- the servers


@pytest.fixture(scope="module")
def otlp_api(database_url: str) -> Iterator[ApiServer]:
    """The API with a short quiet period, so sessions are assembled within a second of the
    last span (the default, 30 s, suits production exporters that batch every 5 s)."""
    server = ApiServer(
        database_url,
        BAGULA_OTLP_SESSION_QUIET_S="0.5",
        BAGULA_OTLP_ASSEMBLE_INTERVAL_S="0.1",
        BAGULA_OTLP_SESSION_MAX_WAIT_S="5",
    ).start()
    yield server
    server.stop()


@pytest.fixture
def tenant(otlp_api, database_url):
    t = new_tenant(otlp_api, database_url)
    yield t
    t.client.close()


class ChatCompletions(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions like OpenAI: a request without a tool result gets one
    tool call (lookup_order); with a tool result, the final answer. Usage always included, the
    second answer with cached prompt tokens."""

    def do_POST(self) -> None:  # noqa: N802 - the handler's protocol
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not any(m.get("role") == "tool" for m in body["messages"]):
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_lookup_1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": "A-17"})},
                    }
                ],
            }
            finish, usage = "tool_calls", {"prompt_tokens": 120, "completion_tokens": 18, "total_tokens": 138}
        else:
            message = {"role": "assistant", "content": "Your order A-17 ships tomorrow."}
            finish, usage = (
                "stop",
                {
                    "prompt_tokens": 1600,
                    "completion_tokens": 9,
                    "total_tokens": 1609,
                    "prompt_tokens_details": {"cached_tokens": 1024},
                },
            )
        data = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1764000000,
                "model": body["model"] + "-2024-07-18",
                "usage": usage,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def openai_stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatCompletions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


# ---------------------------------------------------------------- helpers


def provider_for(exporter, service: str = "support-agent") -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def protobuf_exporter(api: ApiServer, key: str) -> ProtobufExporter:
    return ProtobufExporter(
        endpoint=api.base_url + TRACES, headers={"Authorization": f"Bearer {key}"}, compression=Compression.Gzip
    )


def json_exporter(api: ApiServer, key: str) -> JsonExporter:
    return JsonExporter(endpoint=api.base_url + TRACES, headers={"Authorization": f"Bearer {key}"})


def recorded(run) -> list:
    """The spans an agent run makes, kept in memory (for requests built by hand from them)."""
    captured = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(captured))
    run(provider.get_tracer("agent"))
    return list(captured.get_finished_spans())


def sessions_of(tenant, agent: str, count: int) -> list[dict]:
    """The agent's sessions once the assembler has stored ``count`` of them (oldest first)."""

    def found():
        page = tenant.client.get(f"/v1/agents/{agent}/sessions").json()
        listed = page.get("sessions", [])
        return listed if len(listed) >= count else None

    listed = wait_for(found, timeout=60)
    assert len(listed) == count, listed
    return [tenant.client.get(f"/v1/sessions/{s['sessionId']}").json() for s in reversed(listed)]


def reference_cost(model: str, tokens_in: int, tokens_out: int, cache_read: int = 0) -> float:
    usage = Usage(input_tokens=tokens_in, output_tokens=tokens_out, cache_read_tokens=cache_read or None)
    return float(
        calc_price(
            usage, model_ref=model, provider_id="openai", genai_request_timestamp=datetime.now(timezone.utc)
        ).total_price
    )


def calls(session: dict) -> list[dict]:
    return [c for t in session["turns"] for c in t["llmCalls"]]


def tools(session: dict) -> list[dict]:
    return [c for t in session["turns"] for c in t["agentResponse"]["toolCalls"]]


def db_rows(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


# ---------------------------------------------------------------- an agent instrumented by hand


def support_agent_run(tracer, conversation: str | None, fail_tool: bool = False) -> None:
    """What a hand-instrumented agent emits under the GenAI semantic conventions: an
    invoke_agent span, around a chat, an execute_tool and a second chat."""
    attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "order-bot", "user.id": "u-42"}
    if conversation:
        attributes["gen_ai.conversation.id"] = conversation
    with tracer.start_as_current_span("invoke_agent order-bot", kind=SpanKind.INTERNAL, attributes=attributes):
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 812,
                "gen_ai.usage.output_tokens": 95,
                "gen_ai.request.temperature": 0.2,
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "Where is my order A-17?"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [
                                {
                                    "type": "tool_call",
                                    "id": "call_1",
                                    "name": "lookup_order",
                                    "arguments": {"order_id": "A-17"},
                                }
                            ],
                        }
                    ]
                ),
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool lookup_order",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup_order",
                "gen_ai.tool.call.id": "call_1",
            },
        ) as tool:
            if fail_tool:
                tool.set_status(Status(StatusCode.ERROR, "warehouse API timed out"))
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 950,
                "gen_ai.usage.output_tokens": 40,
            },
        ):
            pass


def assert_support_session(session: dict, tool_error: str | None = None) -> None:
    assert session["agentName"] == "order-bot"
    assert session["userId"] == "u-42"
    assert session["initialRequest"] == "Where is my order A-17?"
    assert [t["trigger"]["type"] for t in session["turns"]] == ["user_message", "agent_step"]
    first, second = calls(session)
    assert (first["provider"], first["model"], first["requestModel"]) == ("openai", "gpt-4o-2024-08-06", "gpt-4o")
    assert (first["metrics"]["tokensInput"], first["metrics"]["tokensOutput"]) == (812, 95)
    assert (second["provider"], second["model"]) == ("openai", "gpt-4o")
    assert (second["metrics"]["tokensInput"], second["metrics"]["tokensOutput"]) == (950, 40)
    # kept, not dropped: an attribute the mapping has no place for
    assert first["otel"]["attributes"]["gen_ai.request.temperature"] == 0.2
    for call, (model, tokens_in, tokens_out) in zip(
        calls(session), [("gpt-4o-2024-08-06", 812, 95), ("gpt-4o", 950, 40)], strict=True
    ):
        assert call["metrics"]["costUsd"] is None
        assert call["metrics"]["costSource"] == "price_table"
        assert call["metrics"]["estimatedCostUsd"] == pytest.approx(reference_cost(model, tokens_in, tokens_out))
    [tool] = tools(session)
    assert (tool["toolId"], tool["toolName"], tool["arguments"]) == ("call_1", "lookup_order", {"order_id": "A-17"})
    assert tool["error"] == tool_error
    assert session["turns"][0]["agentResponse"]["toolCalls"] == [tool]


# ---------------------------------------------------------------- the OpenTelemetry SDK's exporters


def test_sdk_protobuf_exporter_spans_become_a_session(otlp_api, tenant, database_url):
    exporter = protobuf_exporter(otlp_api, tenant.key)
    provider = provider_for(exporter)
    support_agent_run(provider.get_tracer("agent"), conversation=None)
    assert provider.force_flush()
    provider.shutdown()

    [session] = sessions_of(tenant, "order-bot", 1)
    assert_support_session(session)
    assert session["finalOutcome"]["status"] == "success"
    assert session["otel"]["spanCount"] == 4
    assert db_rows(database_url, "select count(*) from otlp_spans where project_id = %s", (tenant.project_id,)) == [
        (4,)
    ]


def test_sdk_json_exporter_spans_become_a_session(otlp_api, tenant):
    provider = provider_for(json_exporter(otlp_api, tenant.key))
    support_agent_run(provider.get_tracer("agent"), conversation=None, fail_tool=True)
    assert provider.force_flush()
    provider.shutdown()

    [session] = sessions_of(tenant, "order-bot", 1)
    assert_support_session(session, tool_error="warehouse API timed out")


def test_a_conversation_id_joins_traces_into_one_session(otlp_api, tenant):
    provider = provider_for(protobuf_exporter(otlp_api, tenant.key))
    tracer = provider.get_tracer("agent")
    support_agent_run(tracer, conversation="conv-7")
    support_agent_run(tracer, conversation="conv-7")
    support_agent_run(tracer, conversation=None)
    assert provider.force_flush()
    provider.shutdown()

    joined, alone = sorted(sessions_of(tenant, "order-bot", 2), key=lambda s: -len(s["turns"]))
    assert len(joined["turns"]) == 4 and len(alone["turns"]) == 2
    assert joined["otel"]["conversationId"] == "conv-7" and joined["otel"]["traceCount"] == 2
    assert [t["turnNumber"] for t in joined["turns"]] == [1, 2, 3, 4]


# ---------------------------------------------------------------- instrumentations of the openai client


CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    }
]


def openai_agent(base_url: str, run_tool=None) -> None:
    """An agent on the real openai client: a question, the tool the model asks for, the answer.
    ``run_tool(name, call_id, arguments)`` runs the tool (under the application's own span)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    messages: list[dict] = [{"role": "user", "content": "Where is order A-17?"}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=CHAT_TOOLS)
    asked = first.choices[0].message
    [request] = asked.tool_calls
    arguments = json.loads(request.function.arguments)
    result = run_tool(request.function.name, request.id, arguments) if run_tool else {"status": "shipped"}
    messages += [
        asked.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": request.id, "content": json.dumps(result)},
    ]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=CHAT_TOOLS)


def assert_openai_session(session: dict, cache_read: int | None) -> None:
    assert session["initialRequest"] == "Where is order A-17?"
    first, second = calls(session)
    for call in (first, second):
        assert (call["provider"], call["model"]) == ("openai", "gpt-4o-mini-2024-07-18")
        assert call["metrics"]["costSource"] == "price_table"
    assert (first["metrics"]["tokensInput"], first["metrics"]["tokensOutput"]) == (120, 18)
    assert (second["metrics"]["tokensInput"], second["metrics"]["tokensOutput"]) == (1600, 9)
    assert first["metrics"]["estimatedCostUsd"] == pytest.approx(reference_cost("gpt-4o-mini", 120, 18))
    assert second["metrics"]["estimatedCostUsd"] == pytest.approx(
        reference_cost("gpt-4o-mini", 1600, 9, cache_read=cache_read or 0)
    )
    assert second["metrics"].get("tokensCacheRead") == cache_read
    # the tool call exists only in the model's answer and the next request: no span of its own
    [tool] = tools(session)
    assert (tool["toolId"], tool["toolName"]) == ("call_lookup_1", "lookup_order")
    assert tool["arguments"] == {"order_id": "A-17"}
    assert tool["result"] in ({"status": "shipped"}, json.dumps({"status": "shipped"}))
    assert session["turns"][0]["agentResponse"]["toolCalls"] == [tool]
    assert session["turns"][1]["agentResponse"]["message"] == "Your order A-17 ships tomorrow."


def test_official_openai_instrumentation(otlp_api, tenant, openai_stub, monkeypatch):
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    provider = provider_for(protobuf_exporter(otlp_api, tenant.key), service="openai-support")
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        # The application's own span around the request makes one trace, hence one session.
        with provider.get_tracer("app").start_as_current_span("handle request"):
            openai_agent(openai_stub)
    finally:
        instrumentor.uninstrument()
    assert provider.force_flush()
    provider.shutdown()

    [session] = sessions_of(tenant, "openai-support", 1)
    # openai-v2 does not report cached tokens: the whole prompt is priced at the input rate
    assert_openai_session(session, cache_read=None)


def test_openinference_instrumentation(otlp_api, tenant, openai_stub):
    from openinference.instrumentation import OITracer, TraceConfig, get_tool_attributes, using_attributes
    from openinference.instrumentation.openai import OpenAIInstrumentor

    provider = provider_for(json_exporter(otlp_api, tenant.key), service="oi-service")
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    tracer = OITracer(provider.get_tracer("app"), config=TraceConfig())

    def run_tool(name: str, call_id: str, arguments: dict) -> dict:
        # What an OpenInference-instrumented framework records for a tool it runs.
        with tracer.start_as_current_span(
            name,
            openinference_span_kind="tool",
            attributes={**get_tool_attributes(name=name, parameters=arguments), "tool_call.id": call_id},
        ) as span:
            result = {"status": "shipped"}
            span.set_output(json.dumps(result))
            return result

    try:
        # Two requests of one chat: two traces, one session by OpenInference's session.id.
        with using_attributes(session_id="chat-991", user_id="u-7"):
            for _ in range(2):
                with tracer.start_as_current_span(
                    "order-bot", openinference_span_kind="agent", attributes={"agent.name": "order-bot"}
                ):
                    openai_agent(openai_stub, run_tool)
    finally:
        instrumentor.uninstrument()
    assert provider.force_flush()
    provider.shutdown()

    [session] = sessions_of(tenant, "order-bot", 1)
    assert session["userId"] == "u-7"
    assert session["otel"]["conversationId"] == "chat-991" and session["otel"]["traceCount"] == 2
    assert [t["trigger"]["type"] for t in session["turns"]] == ["user_message", "agent_step"] * 2
    first_request = {**session, "turns": session["turns"][:2]}
    assert_openai_session(first_request, cache_read=1024)
    # the tool's own span and the model's request are one tool call: timed by the span
    tool = tools(first_request)[0]
    assert tool["otel"]["name"] == "lookup_order" and tool["latencyMs"] is not None


# ---------------------------------------------------------------- exactly once


def export_body(spans: list) -> bytes:
    return encode_spans(spans).SerializeToString()


def export(tenant, body: bytes, content_type: str = PROTOBUF, **headers) -> httpx.Response:
    return tenant.client.post(TRACES, content=body, headers={"Content-Type": content_type, **headers})


def test_a_resent_export_is_stored_once(otlp_api, tenant, database_url):
    spans = recorded(lambda tracer: support_agent_run(tracer, conversation=None))
    body = export_body(spans)
    for _ in range(2):  # the exporter's retry after a lost answer
        response = export(tenant, body)
        assert response.status_code == 200
        assert response.headers["content-type"] == PROTOBUF
        assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    [session] = sessions_of(tenant, "order-bot", 1)

    # and once more after its session was made: nothing new lands, nothing is assembled again
    assert export(tenant, gzip.compress(body), **{"Content-Encoding": "gzip"}).status_code == 200
    project = (tenant.project_id,)
    assert db_rows(database_url, "select count(*) from otlp_spans where project_id = %s", project) == [(4,)]
    assert db_rows(
        database_url, "select count(*), bool_or(pending) from otlp_traces where project_id = %s", project
    ) == [(1, False)]
    assert db_rows(database_url, "select session_id from session_ledger where project_id = %s", project) == [
        (uuid.UUID(session["sessionId"]),)
    ]
    assert db_rows(database_url, "select count(*) from llm_calls where project_id = %s", project) == [(2,)]


def test_spans_arriving_after_their_session_form_the_next_one(otlp_api, tenant, database_url):
    spans = recorded(lambda tracer: support_agent_run(tracer, conversation="conv-late"))
    assert export(tenant, export_body(spans)).status_code == 200
    sessions_of(tenant, "order-bot", 1)
    later = recorded(lambda tracer: support_agent_run(tracer, conversation="conv-late"))
    assert export(tenant, export_body(later)).status_code == 200
    first, second = sessions_of(tenant, "order-bot", 2)
    assert first["sessionId"] != second["sessionId"]
    assert [len(first["turns"]), len(second["turns"])] == [2, 2]
    assert db_rows(
        database_url,
        "select segment, outcome from otlp_sessions where project_id = %s order by 1",
        (tenant.project_id,),
    ) == [(0, "stored"), (1, "stored")]


def test_a_session_waits_for_a_parent_span_still_to_come(otlp_api, tenant, database_url):
    spans = recorded(lambda tracer: support_agent_run(tracer, conversation=None))
    *children, root = spans
    assert root.parent is None and all(s.parent.span_id == root.context.span_id for s in children)
    assert export(tenant, export_body(children)).status_code == 200

    # The assembler looked, found the parent missing, and put the trace back for later.
    deferred = "select ready_at > last_received_at + interval '0.5 s' from otlp_traces where project_id = %s"
    wait_for(lambda: db_rows(database_url, deferred, (tenant.project_id,)) == [(True,)], timeout=30)
    assert export(tenant, export_body([root])).status_code == 200

    [session] = sessions_of(tenant, "order-bot", 1)
    assert session["otel"]["spanCount"] == 4
    assert_support_session(session)


def test_a_parent_that_never_comes_holds_its_session_back_for_the_longest_wait(otlp_api, tenant, database_url):
    spans = recorded(lambda tracer: support_agent_run(tracer, conversation=None))
    assert export(tenant, export_body(spans[:-1])).status_code == 200

    # without the agent's span, the agent is the service the spans came from
    [session] = sessions_of(tenant, "support-agent", 1)
    assert session["otel"]["spanCount"] == 3 and len(calls(session)) == 2
    # BAGULA_OTLP_SESSION_MAX_WAIT_S=5 on this server
    [(waited,)] = db_rows(
        database_url,
        "select extract(epoch from assembled_at - first_received_at) from otlp_traces where project_id = %s",
        (tenant.project_id,),
    )
    assert waited >= 5


# ---------------------------------------------------------------- rejected precisely, the rest kept


def three_spans() -> list:
    def run(tracer):
        with tracer.start_as_current_span(
            "invoke_agent", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "order-bot"}
        ):
            for n in range(2):
                with tracer.start_as_current_span(
                    "chat",
                    attributes={
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.usage.input_tokens": 100 + n,
                        "gen_ai.usage.output_tokens": 10,
                    },
                ):
                    pass

    return recorded(run)


def test_a_malformed_span_is_rejected_and_the_others_stored(otlp_api, tenant, database_url):
    request = encode_spans(three_spans())
    spans = request.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["chat", "chat", "invoke_agent"]
    body = request.SerializeToString()
    broken = spans[1].SerializeToString()
    assert body.count(broken) == 1
    # the same length of bytes that are no protobuf (field 0 is invalid): the envelope still parses
    body = body.replace(broken, b"\x00" * len(broken))

    response = export(tenant, body)
    assert response.status_code == 200, response.content
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert answer.partial_success.error_message.startswith(
        "1 of 3 spans rejected: resourceSpans[0].scopeSpans[0].spans[1]"
    )
    stored = db_rows(
        database_url,
        "select span_id, attributes->'gen_ai.usage.input_tokens' from otlp_spans where project_id = %s order by name",
        (tenant.project_id,),
    )
    assert stored == [(spans[0].span_id, 100), (spans[2].span_id, None)]


def test_an_attribute_of_the_wrong_type_rejects_its_span(otlp_api, tenant, database_url):
    request = json.loads(encode_spans_json(three_spans()))
    span = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    for attribute in span["attributes"]:
        if attribute["key"] == "gen_ai.usage.input_tokens":
            attribute["value"] = {"stringValue": "one hundred"}

    response = export(tenant, json.dumps(request).encode(), JSON)
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    answer = response.json()
    assert answer["partialSuccess"]["rejectedSpans"] in ("1", 1)
    assert answer["partialSuccess"]["errorMessage"] == (
        "1 of 3 spans rejected: resourceSpans[0].scopeSpans[0].spans[0] (span " + span["spanId"] + "): attribute "
        "gen_ai.usage.input_tokens: a token count must be an integer (intValue), got stringValue"
    )
    assert db_rows(database_url, "select count(*) from otlp_spans where project_id = %s", (tenant.project_id,)) == [
        (2,)
    ]


def test_message_content_whose_json_would_make_a_nul_character_is_kept_as_text(otlp_api, tenant):
    # A NUL character cannot be sent in a span (it is refused on landing), but JSON text
    # inside an attribute can spell one as an escape; parsed, PostgreSQL could not store it.
    messages = '[{"role": "user", "parts": [{"type": "text", "content": "a\\u0000b"}]}]'

    def run(tracer):
        with tracer.start_as_current_span(
            "invoke_agent", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "nul-bot"}
        ):
            with tracer.start_as_current_span(
                "chat",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.input.messages": messages,
                },
            ):
                pass

    assert export(tenant, export_body(recorded(run))).status_code == 200
    [session] = sessions_of(tenant, "nul-bot", 1)
    [call] = calls(session)
    assert call["messages"] == messages


def encode_spans_json(spans: list) -> bytes:
    from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_json

    encoded = encode_json(spans)
    return encoded if isinstance(encoded, bytes) else encoded.to_json().encode()


def status_of(response: httpx.Response, encoding: str = PROTOBUF) -> status_pb2.Status:
    assert response.headers["content-type"] == encoding
    if encoding == JSON:
        from google.protobuf import json_format

        return json_format.Parse(response.content, status_pb2.Status())
    return status_pb2.Status.FromString(response.content)


def test_a_body_that_is_no_export_request_is_a_400_status(otlp_api, tenant):
    response = export(tenant, b"\xff\xff\xff not protobuf")
    assert response.status_code == 400
    status = status_of(response)
    assert status.message.startswith("body is not a protobuf ExportTraceServiceRequest")
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad) and bad.field_violations[0].description == status.message

    response = export(tenant, b"{not json", JSON)
    assert response.status_code == 400
    assert status_of(response, JSON).message.startswith("body is not valid JSON")


def test_refusals_are_otlp_statuses_in_the_request_encoding(otlp_api, tenant):
    body = export_body(three_spans())
    anonymous = httpx.post(otlp_api.base_url + TRACES, content=body, headers={"Content-Type": PROTOBUF})
    assert anonymous.status_code == 401
    assert "Bearer" in anonymous.headers["www-authenticate"]
    assert status_of(anonymous).code == 16  # UNAUTHENTICATED

    assert export(tenant, body, "text/plain").status_code == 415
    assert export(tenant, body, **{"Content-Encoding": "br"}).status_code == 415
    assert export(tenant, b"\x1f\x8b not gzip", **{"Content-Encoding": "gzip"}).status_code == 400


@pytest.fixture(scope="module")
def strict_api(database_url: str) -> Iterator[ApiServer]:
    """One process with a small body limit and rate: the limits every /v1 endpoint has."""
    server = ApiServer(
        database_url, BAGULA_API_WORKERS="1", BAGULA_MAX_BODY_BYTES="20000", BAGULA_RATE_LIMIT_PER_KEY="4/minute"
    ).start()
    yield server
    server.stop()


def test_the_body_limit_applies_after_gzip(strict_api, database_url):
    tenant = new_tenant(strict_api, database_url)
    spans = recorded(lambda tracer: [support_agent_run(tracer, None) for _ in range(40)])
    body = export_body(spans)
    assert len(body) > 20_000 and len(gzip.compress(body)) < 20_000
    response = export(tenant, gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert status_of(response).code == 8  # RESOURCE_EXHAUSTED
    assert export(tenant, export_body(spans[:4])).status_code == 200


def test_the_rate_limit_answers_429_with_retry_after(strict_api, database_url):
    tenant = new_tenant(strict_api, database_url)
    body = export_body(three_spans())
    answers = [export(tenant, body) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
    assert int(answers[-1].headers["retry-after"]) > 0
    assert status_of(answers[-1]).code == 8  # RESOURCE_EXHAUSTED


def test_the_exporter_retries_a_503_until_the_database_is_back(tmp_path):
    from ingest_api import db
    from tests.support.services import remove_cluster, start_cluster

    cluster = start_cluster()
    try:
        db.upgrade(cluster.url())
        server = ApiServer(
            cluster.url(),
            BAGULA_API_WORKERS="1",
            BAGULA_RETRY_AFTER_S="1",
            BAGULA_DB_TIMEOUT_S="1",
            BAGULA_OTLP_SESSION_QUIET_S="0.2",
        ).start()
        try:
            tenant = new_tenant(server, cluster.url())
            body = export_body(three_spans())
            cluster.stop()
            down = export(tenant, body)
            assert down.status_code == 503
            assert down.headers["retry-after"] == "1"
            assert status_of(down).code == 14  # UNAVAILABLE

            # The SDK's exporter retries 503s (with backoff) within its timeout: the database
            # comes back once the exporter has been told 503.
            refused = threading.Event()
            session = requests.Session()

            def seen(response: requests.Response, *args, **kwargs) -> None:
                if response.status_code == 503:
                    refused.set()

            session.hooks["response"].append(seen)
            exporter = ProtobufExporter(
                endpoint=server.base_url + TRACES,
                timeout=60,
                session=session,
                headers={"Authorization": f"Bearer {tenant.key}"},
            )
            result: list[SpanExportResult] = []
            sending = threading.Thread(target=lambda: result.append(exporter.export(three_spans())))
            sending.start()
            assert refused.wait(timeout=30)
            cluster.ensure()
            sending.join(timeout=90)
            assert result == [SpanExportResult.SUCCESS]
            assert db_rows(
                cluster.url(), "select count(*) from otlp_spans where project_id = %s", (tenant.project_id,)
            ) == [(3,)]
        finally:
            server.stop()
    finally:
        remove_cluster(cluster)


def test_estimates_agree_with_genai_prices_reference():
    """The API's linear fast path gives genai-prices' own figure, cached tokens included."""
    from ingest_api import pricing

    cases = [
        ("openai", "gpt-4o-mini", 1200, 300, 0, 0),
        ("openai", "gpt-4o-2024-08-06", 5000, 700, 4096, 0),
        ("anthropic", "claude-sonnet-4-20250514", 3000, 500, 1000, 200),
        ("gcp.vertex_ai", "gemini-2.5-flash", 10_000, 2000, 0, 0),
        ("aws.bedrock", "amazon.nova-pro-v1:0", 100, 50, 0, 0),
    ]
    for provider, model, tokens_in, tokens_out, reads, writes in cases:
        estimate = pricing.estimate(provider, model, tokens_in, tokens_out, reads, writes)
        reference = pricing.reference_price(provider, model, tokens_in, tokens_out, reads, writes)
        assert estimate is not None and reference is not None, (provider, model)
        assert estimate.cost_usd == pytest.approx(Decimal(reference)), (provider, model)
    assert pricing.estimate("openai", "no-such-model-xyz", 100, 10) is None
