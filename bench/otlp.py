"""OTLP throughput: spans/s through POST /v1/traces from concurrent exporters, and the SDK path
beside it on the same machine.

    .venv/bin/python bench/otlp.py                          # own PostgreSQL + API, defaults
    .venv/bin/python bench/otlp.py --traces 4000 --exporters 8 --workers 2
    .venv/bin/python bench/otlp.py --json                   # OTLP/JSON bodies instead of protobuf

Without --url it starts a throw-away PostgreSQL (durable settings: fsync on, unless
--no-fsync) and `bagula api` with its assemblers, both on this machine. The spans are what the
OpenTelemetry SDK makes for a realistic agent run, recorded through the SDK's own tracer and
encoded by its own OTLP encoder (opentelemetry-exporter-otlp-proto-common): per trace an
`invoke_agent` root span, three `chat` spans (GenAI conventions, token usage, message content
captured: about 1.5 KB of attributes each) and two `execute_tool` spans, 6 spans. Bodies of 512
spans (the BatchSpanProcessor's batch), each exporter posting one after another.

Prints the ingest rate (spans/s accepted, with p50/p99 request latency), the end-to-end rate
(until the assemblers have stored every session in the session tables), and then the SDK
path's rate with the same agent runs as SDK sessions (sessions/s and raw rows/s).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bagula.localdb import LocalPostgres, free_port  # noqa: E402
from ingest_api import db  # noqa: E402
from ingest_api.store import keys  # noqa: E402

SPANS_PER_TRACE = 6
WORDS = (
    "order refund shipping delay invoice account password reset subscription plan upgrade billing address "
    "warehouse tracking carrier customer policy warranty return exchange discount payment"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def record_traces(count: int, seed: int, start_ns: int) -> list:
    """Agent runs recorded through the OpenTelemetry SDK (ReadableSpans, in export order)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    rng = random.Random(seed)
    captured = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "support-agent", "service.version": "1.4.2", "deployment.environment": "production"}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(captured))
    tracer = provider.get_tracer("bench.agent")
    llm = provider.get_tracer("opentelemetry.instrumentation.openai_v2", "2.4b0")
    for n in range(count):
        t = start_ns + n * 50_000_000
        conversation = f"conv-{seed}-{n}"
        root = tracer.start_span(
            "invoke_agent support-agent",
            start_time=t,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "support-agent",
                "gen_ai.conversation.id": conversation,
                "user.id": f"customer-{rng.randint(1, 2000)}",
            },
        )
        from opentelemetry.trace import set_span_in_context

        context = set_span_in_context(root)
        clock = t + 1_000_000
        history = [
            {"role": "system", "parts": [{"type": "text", "content": "You are the support agent."}]},
            {"role": "user", "parts": [{"type": "text", "content": _text(rng, 30)}]},
        ]
        for step in range(3):
            tokens_in, tokens_out = 900 + 400 * step + rng.randint(0, 300), rng.randint(60, 260)
            call_id = f"call_{rng.getrandbits(48):012x}"
            output = (
                [
                    {
                        "role": "assistant",
                        "parts": [
                            {
                                "type": "tool_call",
                                "id": call_id,
                                "name": "search_orders",
                                "arguments": {"query": _text(rng, 4)},
                            }
                        ],
                    }
                ]
                if step < 2
                else [{"role": "assistant", "parts": [{"type": "text", "content": _text(rng, 40)}]}]
            )
            span = llm.start_span(
                "chat gpt-4o",
                context=context,
                kind=SpanKind.CLIENT,
                start_time=clock,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.model": "gpt-4o-2024-08-06",
                    "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(40)}",
                    "gen_ai.response.finish_reasons": ["tool_calls" if step < 2 else "stop"],
                    "gen_ai.usage.input_tokens": tokens_in,
                    "gen_ai.usage.output_tokens": tokens_out,
                    "gen_ai.usage.cache_read.input_tokens": 512 if step else 0,
                    "server.address": "api.openai.com",
                    "server.port": 443,
                    "gen_ai.input.messages": orjson.dumps(history).decode(),
                    "gen_ai.output.messages": orjson.dumps(output).decode(),
                },
            )
            clock += rng.randint(400, 2500) * 1_000_000
            span.end(end_time=clock)
            history = history + output
            if step < 2:
                tool = tracer.start_span(
                    "execute_tool search_orders",
                    context=context,
                    start_time=clock,
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "search_orders",
                        "gen_ai.tool.call.id": call_id,
                    },
                )
                clock += rng.randint(50, 400) * 1_000_000
                tool.end(end_time=clock)
                history = history + [
                    {
                        "role": "tool",
                        "parts": [
                            {"type": "tool_call_response", "id": call_id, "response": {"orders": [_text(rng, 3)]}}
                        ],
                    }
                ]
        root.end(end_time=clock + 1_000_000)
    provider.shutdown()
    return list(captured.get_finished_spans())


def bodies(spans: list, per_request: int, as_json: bool, compress: bool) -> list[bytes]:
    """Export bodies as the OTLP exporters encode them."""
    if as_json:
        from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_json
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    out = []
    for i in range(0, len(spans), per_request):
        chunk = spans[i : i + per_request]
        body = encode_json(chunk).to_json().encode() if as_json else encode_spans(chunk).SerializeToString()
        out.append(gzip.compress(body, compresslevel=6) if compress else body)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def drive(url: str, path: str, headers: dict, payloads: list[bytes], clients: int) -> tuple[float, list[float]]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for payload in payloads:
        queue.put_nowait(payload)
    latencies: list[float] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
            while True:
                try:
                    payload = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                response = await http.post(path, content=payload)
                latencies.append(time.perf_counter() - started)
                if response.status_code not in (200, 207):
                    raise RuntimeError(f"{response.status_code}: {response.content[:500]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies


def assembled(database_url: str, project_id: uuid.UUID) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "select count(*) from otlp_sessions where project_id = %s and outcome = 'stored'", (project_id,)
        ).fetchone()[0]


def sdk_sessions(spans: list, project_seed: int) -> list[dict]:
    """The same agent runs as SDK sessions (the assembler's mapping of the same spans)."""
    from ingest_api.otlp import mapping

    by_trace: dict[int, list] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    sessions = []
    project = uuid.UUID(int=project_seed)
    for trace_id, group in by_trace.items():
        rows = [_row(s) for s in group]
        session = mapping.build(project, f"trace:{trace_id:032x}", 0, rows)
        session["sessionId"] = str(uuid.uuid4())
        sessions.append(session)
    return sessions


def _row(span) -> dict:
    """A ReadableSpan as the assembler reads it from otlp_spans."""
    context, parent = span.context, span.parent
    return {
        "trace_id": context.trace_id.to_bytes(16, "big"),
        "span_id": context.span_id.to_bytes(8, "big"),
        "parent_span_id": parent.span_id.to_bytes(8, "big") if parent else None,
        "name": span.name,
        "kind": span.kind.value + 1,
        "start_unix_nano": span.start_time,
        "end_unix_nano": span.end_time,
        "flags": 0,
        "status_code": span.status.status_code.value,
        "status_message": span.status.description,
        "attributes": dict(span.attributes),
        "events": None,
        "links": None,
        "resource": dict(span.resource.attributes),
        "scope_name": span.instrumentation_scope.name,
        "parent_known": True,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running API; default: start one here")
    parser.add_argument("--api-key")
    parser.add_argument("--database-url", help="to watch the assemblers (default: the bench's own)")
    parser.add_argument("--traces", type=int, default=4000, help=f"agent runs of {SPANS_PER_TRACE} spans each")
    parser.add_argument("--exporters", type=int, default=8, help="concurrent exporters")
    parser.add_argument("--batch", type=int, default=512, help="spans per export request")
    parser.add_argument("--workers", type=int, default=2, help="API processes when the bench starts the API")
    parser.add_argument("--json", action="store_true", help="OTLP/JSON bodies (default: protobuf)")
    parser.add_argument("--gzip", action="store_true", help="gzip the bodies (the exporters' default is none)")
    parser.add_argument("--no-fsync", action="store_true", help="throw-away database without fsync")
    parser.add_argument("--no-sdk", action="store_true", help="skip the SDK path's comparison")
    args = parser.parse_args()

    cluster = api = None
    try:
        if args.url:
            url, key, database_url = args.url, args.api_key, args.database_url
        else:
            cluster = LocalPostgres(
                Path(tempfile.mkdtemp(prefix="bagula-bench-")), free_port(), durable=not args.no_fsync
            )
            database_url = cluster.ensure()
            db.upgrade(database_url)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            api = subprocess.Popen(
                [sys.executable, "-m", "bagula", "api", "--port", str(port), "--workers", str(args.workers)],
                env={
                    **os.environ,
                    "BAGULA_DATABASE_URL": database_url,
                    "BAGULA_METRICS_PORT": "0",
                    "BAGULA_OTLP_SESSION_QUIET_S": os.environ.get("BAGULA_OTLP_SESSION_QUIET_S", "2"),
                    "BAGULA_RATE_LIMIT_PER_KEY": "100000/second",
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(150):
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        project_id = None
        if database_url and not args.api_key:
            with psycopg.connect(database_url) as conn:
                new = keys.create_key(conn, f"bench-otlp-{uuid.uuid4().hex[:6]}")
            key, project_id = new.secret, new.project_id

        print(
            f"recording {args.traces} agent runs ({args.traces * SPANS_PER_TRACE} spans) through the "
            "OpenTelemetry SDK ...",
            flush=True,
        )
        start_ns = time.time_ns() - 3_600 * 10**9
        warm_spans = record_traces(20, seed=2, start_ns=start_ns)
        spans = record_traces(args.traces, seed=1, start_ns=start_ns)
        content_type = "application/json" if args.json else "application/x-protobuf"
        payloads = bodies(spans, args.batch, args.json, args.gzip)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
        if args.gzip:
            headers["Content-Encoding"] = "gzip"
        size = sum(map(len, payloads)) / len(spans)
        asyncio.run(drive(url, "/v1/traces", headers, bodies(warm_spans, args.batch, args.json, args.gzip), 2))

        started = time.perf_counter()
        elapsed, latencies = asyncio.run(drive(url, "/v1/traces", headers, payloads, args.exporters))
        rate = len(spans) / elapsed
        print(
            f"span bodies: {size:,.0f} bytes per span ({'OTLP/JSON' if args.json else 'protobuf'}"
            f"{', gzip' if args.gzip else ''}), {args.batch} spans per request"
        )
        print(
            f"OTLP ingest: {len(spans):,} spans in {elapsed:.1f} s = {rate:,.0f} spans/s "
            f"({args.exporters} exporters, {args.workers} API workers)"
        )
        print(
            f"request latency: p50 {percentile(latencies, 50) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.0f} ms"
        )
        if project_id is not None:
            wanted = args.traces + 20
            deadline = time.monotonic() + 600
            while assembled(database_url, project_id) < wanted and time.monotonic() < deadline:
                time.sleep(0.25)
            total = time.perf_counter() - started
            done = assembled(database_url, project_id)
            print(
                f"end to end (spans in, until every session is in the session tables): {done:,} sessions, "
                f"{len(spans) / total:,.0f} spans/s over {total:.1f} s "
                f"(includes the {os.environ.get('BAGULA_OTLP_SESSION_QUIET_S', '2')} s quiet period)"
            )

        if not args.no_sdk:
            sessions = sdk_sessions(spans, 1)
            rows_per = sum(
                1 + len(s["turns"]) + sum(len(t["llmCalls"]) + len(t["agentResponse"]["toolCalls"]) for t in s["turns"])
                for s in sessions
            ) / len(sessions)
            sdk_bodies = [
                gzip.compress(orjson.dumps({"sessions": sessions[i : i + 50]})) for i in range(0, len(sessions), 50)
            ]
            sdk_headers = {
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            }
            elapsed, latencies = asyncio.run(drive(url, "/v1/sessions/ingest", sdk_headers, sdk_bodies, args.exporters))
            print(
                f"SDK path, same runs as sessions: {len(sessions) / elapsed:,.0f} sessions/s = "
                f"{len(sessions) * rows_per / elapsed:,.0f} raw rows/s ({rows_per:.1f} rows each) = "
                f"{len(sessions) * SPANS_PER_TRACE / elapsed:,.0f} span-equivalents/s "
                f"(50-session gzip batches, p50 {percentile(latencies, 50) * 1000:.0f} ms)"
            )
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=30)
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
