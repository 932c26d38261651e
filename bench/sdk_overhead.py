"""What instrumenting costs the agent's thread: time per SDK call, while batches are being sent.

    .venv/bin/python bench/sdk_overhead.py [--sessions 20000] [--redact]

A stub ingest endpoint runs in a separate process and acknowledges every batch,
so the client's sender thread is really encoding, compressing and posting while the
agent's thread records (they share the GIL, as in an application). ``--redact``
sets the ``pii`` redactor (it runs in the sender thread, not in the calls) and also
reports what encoding one session costs the sender with and without it. The
TypeScript client's counterpart is bench/sdk_overhead_ts.mjs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk" / "python"))

from bagula_client import BagulaClient, redact  # noqa: E402
from bagula_client._wire import encode_session  # noqa: E402

STUB = textwrap.dedent(
    """
    import gzip, http.server, json, sys
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        def log_message(self, *a): pass
        def do_POST(self):
            body = json.loads(gzip.decompress(self.rfile.read(int(self.headers["Content-Length"]))))
            out = json.dumps({"stored": len(body["sessions"]), "duplicates": 0, "rejected": []}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(out))); self.end_headers()
            self.wfile.write(out)
    server = http.server.HTTPServer(("127.0.0.1", 0), H)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--redact", action="store_true", help="set the pii redactor")
    args = parser.parse_args()

    stub = subprocess.Popen([sys.executable, "-c", STUB], stdout=subprocess.PIPE, text=True)
    port = int(stub.stdout.readline())
    client = BagulaClient("bgl_bench", f"http://127.0.0.1:{port}", batch_size=50, flush_interval=1.0,
                          max_queue_size=args.sessions + 1, redact=redact.pii if args.redact else None)
    tracker = client.get_session_tracker()
    timings: dict[str, list[float]] = {k: [] for k in (
        "start_session", "start_turn", "record_llm_call", "record_agent_response", "complete_session")}
    clock = time.perf_counter
    messages = [{"role": "user", "content": "x" * 300}]
    try:
        for n in range(args.sessions):
            t0 = clock()
            sid = tracker.start_session("bench-agent", "request", user_id="u", metadata={"n": n})
            t1 = clock()
            turn = tracker.start_turn(sid, {"type": "user_message", "content": "hello"})
            t2 = clock()
            tracker.record_llm_call(sid, turn, provider="openai", model="gpt-4o", start_time=1_764_000_000_000,
                                    end_time=1_764_000_001_000, messages=messages, response={"content": "ok"},
                                    tokens_input=300, tokens_output=40, cost_usd=0.0012)
            t3 = clock()
            tracker.record_agent_response(sid, turn, message="done", tool_calls=[{
                "tool_id": "call_1", "tool_name": "search", "arguments": {"q": "x"},
                "start_time": 1_764_000_001_000, "end_time": 1_764_000_001_050, "result": {"hits": 3}}])
            t4 = clock()
            tracker.complete_session(sid, "success", result="ok", user_satisfaction=5)
            t5 = clock()
            for name, (a, b) in zip(timings, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)], strict=True):
                timings[name].append((b - a) * 1e6)
        sent_started = clock()
        client.flush(timeout=120)
        drain = clock() - sent_started
    finally:
        client.close()
        stub.terminate()

    print(f"{args.sessions} sessions recorded while the sender thread posted {client.stats()['batches']} batches")
    print(f"{'call':<24}{'median µs':>10}{'p99 µs':>10}")
    for name, values in timings.items():
        values.sort()
        print(f"{name:<24}{statistics.median(values):>10.1f}{values[int(len(values) * 0.99)]:>10.1f}")
    per_session = [sum(v[i] for v in timings.values()) for i in range(args.sessions)]
    print(f"{'whole session (5 calls)':<24}{statistics.median(per_session):>10.1f}"
          f"{sorted(per_session)[int(args.sessions * 0.99)]:>10.1f}")
    print(f"left to send after the last call: {drain * 1000:.0f} ms; stats: {client.stats()}")
    if args.redact:
        sender_cost(messages)


def sender_cost(messages: list) -> None:
    """What the sender thread spends per session when it encodes a batch, with and without the hook."""
    sample = {"sessionId": "s", "agentName": "bench-agent", "userId": "u", "initialRequest": "request", "startTime": 1,
              "endTime": 2, "metadata": {"n": 1}, "tags": None, "parentSessionId": None,
              "finalOutcome": {"status": "success", "result": "ok", "userSatisfaction": 5, "confidence": None},
              "turns": [{"turnId": "turn-1", "turnNumber": 1, "timestamp": 1, "userFeedback": None,
                         "trigger": {"type": "user_message", "content": "hello"},
                         "llmCalls": [{"callId": "c", "provider": "openai", "model": "gpt-4o", "startTime": 1,
                                       "endTime": 2, "messages": messages, "response": {"content": "ok"},
                                       "metrics": {"tokensInput": 300, "tokensOutput": 40, "tokensTotal": 340,
                                                   "costUsd": 0.0012, "latencyMs": 1000}}],
                         "agentResponse": {"message": "done", "toolCalls": [
                             {"toolId": "call_1", "toolName": "search", "arguments": {"q": "x"}, "startTime": 1,
                              "endTime": 2, "result": {"hits": 3}, "error": None, "latencyMs": 1}]}}]}
    rounds = 20_000
    for label, hook in (("encode, no hook", None), ("encode, pii redactor", redact.pii)):
        started = time.perf_counter()
        for _ in range(rounds):
            encode_session(sample, hook)
        print(f"sender, per session, {label}: {(time.perf_counter() - started) / rounds * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
