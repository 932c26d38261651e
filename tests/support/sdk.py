"""Test doubles around the real API (a fault-injecting proxy, a server that never answers) and a
session recorded through the seed's tracker calls."""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Fault:
    """What the proxy does with one request: answer `status` itself, or delay, then forward."""

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0


Plan = Callable[[int], Fault | None]


class FaultyProxy:
    """Forwards to the real API, except where ``plan(request_number)`` injects a fault."""

    def __init__(self, upstream: str, plan: Plan) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.requests = 0
        self.faults = 0
        lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    proxy.requests += 1
                    fault = plan(proxy.requests)
                    if fault is not None:
                        proxy.faults += 1
                if fault is not None and fault.status is not None:
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
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                finally:
                    upstream_conn.close()
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


def record_session(tracker, n: int, agent: str = "sdk-agent", **outcome) -> str:
    """One complete session through the seed's tracker calls."""
    sid = tracker.start_session(agent, f"request {n}", user_id=f"user-{n % 7}", metadata={"n": n})
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
