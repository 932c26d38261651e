"""A Slack-style incoming webhook on localhost that records what it is sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Webhook:
    """Answers ``status`` (200 by default) and keeps every accepted message with its alert id."""

    def __init__(self, path: str = "/services/T000/B000/secret") -> None:
        self.status = 200
        self.received: list[tuple[str, dict]] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if webhook.status == 200:
                    webhook.received.append((self.headers["X-Bagula-Alert-Id"], body))
                self.send_response(webhook.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [body["text"] for _, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
