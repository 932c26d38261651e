"""One HTTP POST of an encoded batch, over a kept-alive connection (standard library only)."""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import socket
import time
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

from bagula_client._version import __version__

INGEST_PATH = "/v1/sessions/ingest"


@dataclass
class Reply:
    """What the API answered; ``status`` is None when no answer came (network error, timeout)."""

    status: Optional[int]
    body: Any = None
    retry_after: Optional[float] = None
    error: Optional[str] = None


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpTransport:
    def __init__(self, endpoint: str, api_key: str, timeout: float) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + INGEST_PATH
        self._timeout = timeout
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"bagula-client-python/{__version__}",
        }
        self._conn: Optional[http.client.HTTPConnection] = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def abort(self) -> None:
        """From another thread: end a request that hangs (its recv returns at once)."""
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def post(self, gzipped_body: bytes) -> Reply:
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=gzipped_body, headers=self._headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            # Whatever state the connection is in, start afresh next time.
            self.close()
            return Reply(None, error=f"{type(exc).__name__}: {exc}")
        if response.will_close:
            self.close()
        try:
            body = json.loads(data) if data else None
        except ValueError:
            body = data[:500].decode("utf-8", "replace")
        return Reply(response.status, body, parse_retry_after(response.getheader("Retry-After")))
