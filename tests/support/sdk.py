"""Test doubles around the real API (a fault-injecting proxy, a server that never answers), a
session recorded through the seed's tracker calls, and the shared test vectors of both SDKs.

Python 3.9 must be able to import this module (no ``X | Y`` evaluated at run time): the
oldest Python the client supports runs the vectors through it."""

from __future__ import annotations

import gzip
import http.client
import http.server
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

TESTDATA = Path(__file__).resolve().parents[2] / "sdk" / "testdata"


@dataclass
class Fault:
    """What the proxy does with one request: wait for `hold` (an event the test sets), then
    answer `status` itself, or delay, then forward."""

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    hold: threading.Event | None = None


@dataclass
class Request:
    """One request the proxy saw: its number, the session ids in its body, the status answered."""

    number: int
    session_ids: list[str]
    status: int | None = None


Plan = Callable[[Request], Optional[Fault]]


class FaultyProxy:
    """Forwards to the real API, except where ``plan(request)`` injects a fault. ``log`` lists
    every request in arrival order; ``wait_until_idle`` waits for the ones still in progress."""

    def __init__(self, upstream: str, plan: Plan) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.log: list[Request] = []
        self.faults = 0
        self._in_progress = 0
        self._idle = threading.Condition()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                with proxy._idle:
                    proxy._in_progress += 1
                try:
                    self._handle()
                finally:
                    with proxy._idle:
                        proxy._in_progress -= 1
                        proxy._idle.notify_all()

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    ids = [s.get("sessionId") for s in json.loads(gzip.decompress(body))["sessions"]]
                except (OSError, ValueError, KeyError, TypeError):
                    ids = []
                with proxy._idle:
                    request = Request(len(proxy.log) + 1, ids)
                    proxy.log.append(request)
                    fault = plan(request)
                    if fault is not None:
                        proxy.faults += 1
                if fault is not None and fault.hold is not None:
                    fault.hold.wait(60)
                if fault is not None and fault.status is not None:
                    request.status = fault.status
                    payload = b'{"detail": "injected fault"}'
                    self.send_response(fault.status)
                    if fault.retry_after is not None:
                        self.send_header("Retry-After", fault.retry_after)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault is not None and fault.delay:
                    time.sleep(fault.delay)
                upstream_conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() in (
                    "authorization", "content-type", "content-encoding")}
                try:
                    upstream_conn.request("POST", self.path, body=body, headers=headers)
                    response = upstream_conn.getresponse()
                    data = response.read()
                except OSError:
                    request.status = 502
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                finally:
                    upstream_conn.close()
                request.status = response.status
                self.send_response(response.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass  # the client timed out and went away

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def requests(self) -> int:
        return len(self.log)

    def wait_until_idle(self, timeout: float = 30.0) -> None:
        """Until every request received so far has been answered (forwarded ones included)."""
        with self._idle:
            assert self._idle.wait_for(lambda: self._in_progress == 0, timeout), "proxy still busy"

    def __enter__(self) -> "FaultyProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentServer:
    """Accepts TCP connections (the kernel completes them) and never answers a byte."""

    def __enter__(self) -> "SilentServer":
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def record_session(tracker, n: int, agent: str = "sdk-agent", metadata: dict | None = None, **outcome) -> str:
    """One complete session through the seed's tracker calls."""
    sid = tracker.start_session(agent, f"request {n}", user_id=f"user-{n % 7}",
                                metadata={"n": n} if metadata is None else metadata)
    turn = tracker.start_turn(sid, {"type": "user_message", "content": f"hello {n}"})
    now = time.time() * 1000
    tracker.record_llm_call(
        sid, turn, provider="openai", model="gpt-4o", start_time=now - 900, end_time=now - 100,
        messages=[{"role": "user", "content": "hi"}], response={"content": "hello"},
        tokens_input=100 + n, tokens_output=20, cost_usd=0.001 * n,
    )
    tracker.record_agent_response(sid, turn, message="done", tool_calls=[
        {"tool_id": "call_1", "tool_name": "search", "arguments": {"q": n},
         "start_time": now - 90, "end_time": now - 10, "result": {"hits": n}},
    ])
    tracker.complete_session(sid, outcome.pop("status", "success"), result="ok", **outcome)
    return sid


def session_vectors() -> list[dict]:
    """sdk/testdata/sessions.json: tracker calls and the exact sessions they must produce."""
    return json.loads((TESTDATA / "sessions.json").read_text())["vectors"]


def redaction_vectors() -> list[dict]:
    """sdk/testdata/redaction.json: each ready redactor's input and output."""
    return json.loads((TESTDATA / "redaction.json").read_text())["cases"]


def snake(name: str) -> str:
    """camelCase (the vectors, the wire) -> snake_case (the Python client's keywords)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


class Capture:
    """A tracker's sink that keeps what would be queued for sending, in order."""

    def __init__(self) -> None:
        self.sessions: list[dict] = []

    def enqueue(self, session: dict) -> bool:
        self.sessions.append(session)
        return True


def perform(tracker, step: dict) -> None:
    """One vector step as the Python client's call (camelCase arguments in snake_case)."""
    args = {k: v for k, v in step.items() if k not in ("now", "call")}
    call = step["call"]
    if call == "startSession":
        tracker.start_session(args.pop("agentName"), args.pop("initialRequest"),
                              **{snake(k): v for k, v in args.items()})
    elif call == "startTurn":
        tracker.start_turn(args.pop("sessionId"), args.pop("trigger"), **{snake(k): v for k, v in args.items()})
    elif call == "recordLLMCall":
        metrics = args.pop("metrics", {})
        tracker.record_llm_call(args.pop("sessionId"), args.pop("turnId"),
                                **{snake(k): v for k, v in {**args, **metrics}.items()})
    elif call == "recordAgentResponse":
        tracker.record_agent_response(args["sessionId"], args["turnId"], args.get("message"), args.get("toolCalls"))
    elif call == "recordUserFeedback":
        tracker.record_user_feedback(args["sessionId"], args["turnId"], args["feedback"])
    elif call == "completeSession":
        tracker.complete_session(args.pop("sessionId"), args.pop("status"), **{snake(k): v for k, v in args.items()})
    elif call == "abandonExpired":
        tracker.abandon_expired()
    else:
        raise AssertionError(f"unknown call {call!r} in the vectors")


def run_vector(vector: dict) -> list:
    """The vector's tracker calls, on a fake clock; the sessions as they would go on the wire."""
    from bagula_client import redact
    from bagula_client._tracker import SessionTracker
    from bagula_client._wire import encode_session

    options = vector.get("options", {})
    clock = {"now": 0}
    sink = Capture()
    tracker = SessionTracker(
        sink,
        session_timeout=options.get("sessionTimeoutMs", 1_800_000) / 1000,
        max_open_sessions=options.get("maxOpenSessions", 10_000),
        clock=lambda: clock["now"],
        monotonic=lambda: clock["now"] / 1000,
    )
    redactor = getattr(redact, snake(options["redact"])) if "redact" in options else None
    for step in vector["steps"]:
        clock["now"] = step["now"]
        perform(tracker, step)
    return [json.loads(encode_session(session, redactor)) for session in sink.sessions]


def redaction_output(case: dict) -> str:
    from bagula_client import redact

    return getattr(redact, snake(case["redactor"]))(case["input"], "message")
