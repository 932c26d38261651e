"""The client: an in-memory queue of completed sessions and one background sender thread."""

from __future__ import annotations

import asyncio
import atexit
import collections
import gzip
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from typing import Any, Deque, Dict, List, Optional, Tuple

from bagula_client._tracker import SessionTracker
from bagula_client._transport import HttpTransport, Reply

log = logging.getLogger("bagula_client")

DEFAULT_ENDPOINT = "http://localhost:8000"
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


def _plain_json(value: Any) -> Any:
    """NaN and infinities are not JSON: send them as null rather than lose the session."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    return value


def encode_session(session: Dict[str, Any]) -> bytes:
    try:
        text = json.dumps(session, default=str, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(_plain_json(session), default=str, allow_nan=False, separators=(",", ":"))
    return text.encode("ascii")


def encode_batch(encoded_sessions: List[bytes]) -> bytes:
    body = b'{"sessions":[' + b",".join(encoded_sessions) + b'],"timestamp":%d}' % int(time.time() * 1000)
    return gzip.compress(body, compresslevel=6)


class BagulaClient:
    """Collects completed sessions and sends them in gzip batches from a background thread.

    Nothing here blocks or raises into the agent's code: completing a session is
    an append to a bounded in-memory queue. Batches go out when ``batch_size``
    sessions are queued or ``flush_interval`` seconds have passed; failed sends
    are retried with exponential backoff and jitter (honouring Retry-After).
    Pending sessions are flushed at interpreter exit, waiting at most
    ``shutdown_timeout`` seconds.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        endpoint: Optional[str] = None,
        batch_size: int = 50,
        flush_interval: float = 10.0,
        *,
        max_queue_size: int = 10_000,
        request_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_attempts: Optional[int] = None,
    ) -> None:
        self.api_key = api_key or os.environ.get("BAGULA_API_KEY")
        self.endpoint = endpoint or os.environ.get("BAGULA_ENDPOINT") or DEFAULT_ENDPOINT
        if batch_size < 1 or max_queue_size < 1 or flush_interval <= 0:
            raise ValueError("batch_size and max_queue_size must be >= 1, flush_interval > 0")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue_size = max_queue_size
        self.request_timeout = request_timeout
        self.shutdown_timeout = shutdown_timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        # None: retry until delivered (or until shutdown_timeout at close).
        self.max_attempts = max_attempts
        self.enabled = bool(self.api_key)
        if not self.enabled:
            log.error("bagula: no API key (pass api_key= or set BAGULA_API_KEY); sessions will be dropped")
        self._reset_state()
        self._tracker: Optional[SessionTracker] = None
        _live_clients.add(self)

    # ------------------------------------------------------------------ state

    def _reset_state(self) -> None:
        """Fresh locks, queue and thread: at construction and in a forked child."""
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._queue: Deque[Tuple[float, Dict[str, Any]]] = collections.deque()
        self._pending = 0  # queued + being sent: what flush() waits for
        self._flush_requested = False
        self._closing = False
        self._deadline = math.inf
        self._wake = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._transport: Optional[HttpTransport] = None
        self._counters: Dict[str, int] = collections.Counter()
        self._dropped: Dict[str, int] = collections.Counter()

    def _after_fork_in_child(self) -> None:
        # The parent still owns (and will send) what was queued before the fork.
        self._reset_state()

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="bagula-sender", daemon=True)
            self._worker.start()

    # ------------------------------------------------------------------ public

    def get_session_tracker(self) -> SessionTracker:
        if self._tracker is None:
            self._tracker = SessionTracker(self)
        return self._tracker

    def stats(self) -> Dict[str, Any]:
        """Counters: sent (acknowledged), duplicates, rejected, retried, dropped by reason, queued."""
        with self._cond:
            return {
                "sent": self._counters["sent"],
                "duplicates": self._counters["duplicates"],
                "rejected": self._counters["rejected"],
                "retried": self._counters["retried"],
                "batches": self._counters["batches"],
                "dropped": dict(self._dropped),
                "queued": self._pending,
            }

    def enqueue(self, session: Dict[str, Any]) -> bool:
        """Queue one completed session (wire format). Never blocks on the network; False if dropped."""
        if os.getpid() != self._pid:
            self._reset_state()
        with self._cond:
            if not self.enabled:
                self._dropped["disabled"] += 1
                return False
            if self._closing:
                self._dropped["closed"] += 1
                return False
            if len(self._queue) >= self.max_queue_size:
                self._dropped["queue_full"] += 1
                if self._dropped["queue_full"] == 1 or self._dropped["queue_full"] % 1000 == 0:
                    log.warning("bagula: queue full (%d sessions); dropping", self.max_queue_size)
                return False
            self._queue.append((time.monotonic(), session))
            self._pending += 1
            self._ensure_worker()
            if len(self._queue) >= self.batch_size:
                self._cond.notify_all()
        return True

    def flush(self, timeout: Optional[float] = 30.0) -> bool:
        """Send everything queued now and wait until the API has acknowledged it.

        Returns False if ``timeout`` seconds passed first (the sessions stay queued)."""
        with self._cond:
            if self._pending == 0:
                return True
            self._flush_requested = True
            self._ensure_worker()
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush and stop the sender; waits at most ``timeout`` (default ``shutdown_timeout``) seconds.

        What is still undelivered then is dropped and counted as "shutdown"."""
        timeout = self.shutdown_timeout if timeout is None else timeout
        with self._cond:
            if os.getpid() != self._pid:
                return True
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
            worker = self._worker
        self._wake.set()
        if worker is not None:
            worker.join(max(0.0, timeout) + 1.0)
        with self._cond:
            if self._pending:
                # The worker gave up (or is stuck in a request): count what is lost.
                self._dropped["shutdown"] += len(self._queue)
                self._queue.clear()
                self._pending = 0
            delivered = self._dropped["shutdown"] == 0
        return delivered

    async def aflush(self, timeout: Optional[float] = 30.0) -> bool:
        """``flush`` for asyncio code: waits without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    async def aclose(self, timeout: Optional[float] = None) -> bool:
        return await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)

    def __enter__(self) -> "BagulaClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ sender thread

    def _next_batch(self) -> Optional[List[Dict[str, Any]]]:
        with self._cond:
            while True:
                if self._queue:
                    due = self._queue[0][0] + self.flush_interval
                    if (
                        len(self._queue) >= self.batch_size
                        or self._flush_requested
                        or self._closing
                        or time.monotonic() >= due
                    ):
                        break
                    self._cond.wait(max(0.0, due - time.monotonic()))
                elif self._closing:
                    return None
                else:
                    self._flush_requested = False
                    self._cond.wait()
            count = min(self.batch_size, len(self._queue))
            return [self._queue.popleft()[1] for _ in range(count)]

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            try:
                self._deliver([encode_session(s) for s in batch])
            except Exception:  # noqa: BLE001 - the sender must survive anything
                log.exception("bagula: unexpected error sending a batch; dropping it")
                self._count_dropped("internal_error", len(batch))
            with self._cond:
                self._pending -= len(batch)
                self._cond.notify_all()
            if self._gave_up():
                break
        if self._transport is not None:
            self._transport.close()

    def _gave_up(self) -> bool:
        with self._cond:
            if self._closing and time.monotonic() >= self._deadline and self._queue:
                lost = len(self._queue)
                self._dropped["shutdown"] += lost
                self._queue.clear()
                self._pending -= lost
                self._cond.notify_all()
                log.warning("bagula: shutdown timeout; %d sessions not delivered", lost)
                return True
        return False

    def _count(self, name: str, n: int = 1) -> None:
        with self._cond:
            self._counters[name] += n

    def _count_dropped(self, reason: str, n: int) -> None:
        with self._cond:
            self._dropped[reason] += n

    def _backoff(self, attempt: int) -> float:
        base = min(self.max_backoff, self.initial_backoff * (2 ** (attempt - 1)))
        return base * random.uniform(0.5, 1.0)

    def _sleep(self, seconds: float) -> bool:
        """Sleep before a retry; False when closing and the shutdown deadline is reached."""
        end = time.monotonic() + seconds
        while True:
            with self._cond:
                closing, deadline = self._closing, self._deadline
            now = time.monotonic()
            if closing and now >= deadline:
                return False
            until = min(end, deadline) if closing else end
            if now >= until:
                return True
            if not closing:
                self._wake.wait(until - now)
            else:
                time.sleep(until - now)

    def _deliver(self, sessions: List[bytes]) -> None:
        """Send one batch until it is acknowledged, refused for good, or shutdown ends."""
        if self._transport is None:
            self._transport = HttpTransport(self.endpoint, self.api_key or "", self.request_timeout)
        body = encode_batch(sessions)
        attempt = 0
        while True:
            reply = self._transport.post(body)
            if reply.status is not None and reply.status < 300 or reply.status == 422 and _has_rejections(reply):
                self._acknowledge(reply, len(sessions))
                return
            if reply.status == 413 and len(sessions) > 1:
                middle = len(sessions) // 2
                self._deliver(sessions[:middle])
                self._deliver(sessions[middle:])
                return
            if reply.status is not None and reply.status not in RETRYABLE_STATUSES:
                log.error("bagula: API refused a batch of %d sessions (%s): %s; dropping it",
                          len(sessions), reply.status, reply.body)
                self._count_dropped("client_error", len(sessions))
                return
            attempt += 1
            if self.max_attempts is not None and attempt >= self.max_attempts:
                log.error("bagula: giving up on a batch of %d sessions after %d attempts (%s)",
                          len(sessions), attempt, reply.error or reply.status)
                self._count_dropped("retries_exhausted", len(sessions))
                return
            delay = reply.retry_after if reply.retry_after is not None else self._backoff(attempt)
            log.info("bagula: send failed (%s); retry %d in %.1f s", reply.error or reply.status, attempt, delay)
            self._count("retried")
            if not self._sleep(min(delay, self.max_backoff * 4)):
                self._count_dropped("shutdown", len(sessions))
                return

    def _acknowledge(self, reply: Reply, size: int) -> None:
        body = reply.body if isinstance(reply.body, dict) else {}
        rejected = body.get("rejected") or []
        for item in rejected:
            log.warning("bagula: API rejected session %s: %s", item.get("sessionId"), item.get("errors"))
        with self._cond:
            self._counters["batches"] += 1
            self._counters["sent"] += size - len(rejected)
            self._counters["duplicates"] += int(body.get("duplicates") or 0)
            self._counters["rejected"] += len(rejected)


def _has_rejections(reply: Reply) -> bool:
    return isinstance(reply.body, dict) and isinstance(reply.body.get("rejected"), list)


# Flush every live client at interpreter exit, each bounded by its shutdown_timeout.
_live_clients: "weakref.WeakSet[BagulaClient]" = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for client in list(_live_clients):
        try:
            client.close()
        except Exception:  # noqa: BLE001
            log.exception("bagula: error while flushing at exit")


def _reset_all_after_fork() -> None:
    for client in list(_live_clients):
        client._after_fork_in_child()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_after_fork)
