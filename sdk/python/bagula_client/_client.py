"""The client: an in-memory queue of finished sessions and one background sender thread.

Delivery policy (the README's "What it promises" says the same for users):

- A batch goes out when ``batch_size`` sessions are queued, the oldest has waited
  ``flush_interval`` seconds, or ``flush()``/``close()`` asks. Each session is redacted and
  encoded on its own in the sender thread; one that cannot be is dropped alone
  (``unencodable``, ``redaction_error``).
- Unavailable (no answer, 408, 429, 502, 503, 504): the API or the way to it is down, and
  every batch would fail alike. The same batch is retried with exponential backoff and jitter
  (or after ``Retry-After``) until it is delivered: an outage loses nothing; memory is bounded
  by the queue (``queue_full``) and exit by ``shutdown_timeout`` (``shutdown``).
- Server error (500 and the other 5xx): the API answered but failed on this batch, perhaps
  because of one of its sessions. After ``server_error_attempts`` tries the batch is split in
  two and both halves go to the back of the queue, behind every session queued by then, so
  newer sessions are not held up and a session the API cannot take ends up alone; a single
  session that still fails is dropped (``server_error``) with its id logged.
- 413: the batch is split in two and both halves sent at once; a single session too large
  is dropped (``client_error``). Other 4xx: dropped at once (``client_error``), never retried.
  207 and 422 with ``rejected``: the stored sessions are done; the rejected are logged with
  their errors and counted (``rejected``), never retried.
- ``max_attempts`` (unlimited by default) caps the tries of any batch (``retries_exhausted``).
- The backoff grows with the number of failures in a row, whichever batch they were on, and
  resets on the first success, so an outage is not hammered by one batch after another.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import math
import os
import random
import signal
import threading
import time
import weakref
from typing import Any, Deque, Dict, List, Optional, Tuple

from bagula_client._tracker import DEFAULT_MAX_OPEN_SESSIONS, DEFAULT_SESSION_TIMEOUT, SessionTracker
from bagula_client._transport import HttpTransport, Reply
from bagula_client._wire import EncodeError, Redactor, encode_batch, encode_session

log = logging.getLogger("bagula_client")

DEFAULT_ENDPOINT = "http://localhost:8000"
UNAVAILABLE_STATUSES = frozenset({408, 429, 502, 503, 504})
SERVER_ERROR_STATUSES = frozenset(range(500, 600)) - UNAVAILABLE_STATUSES


class _Batch:
    """Encoded sessions sent together; ``after`` is the sequence number of the last session
    queued when it went to the back: it waits until those have been taken."""

    __slots__ = ("sessions", "ids", "attempts", "server_errors", "after", "body")

    def __init__(self, sessions: List[bytes], ids: List[str], after: int = -1) -> None:
        self.sessions = sessions
        self.ids = ids
        self.attempts = 0
        self.server_errors = 0
        self.after = after
        self.body: Optional[bytes] = None

    def __len__(self) -> int:
        return len(self.sessions)

    def halves(self, after: int = -1) -> Tuple["_Batch", "_Batch"]:
        middle = len(self.sessions) // 2
        return (_Batch(self.sessions[:middle], self.ids[:middle], after),
                _Batch(self.sessions[middle:], self.ids[middle:], after))


class BagulaClient:
    """Collects finished sessions and sends them in gzip batches from a background thread.

    Nothing here blocks or raises into the agent's code: completing a session is an append
    to a bounded in-memory queue. See the module docstring for the delivery policy. Open
    sessions are sent as ``abandoned`` after ``session_timeout`` seconds (None: never), past
    ``max_open_sessions``, and when the client closes. Pending sessions are flushed at
    interpreter exit and on SIGTERM (when the application has not set its own handler),
    waiting at most ``shutdown_timeout`` seconds. ``redact(value, field)`` is applied to every
    payload before it leaves the process (see ``bagula_client.redact``).
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
        server_error_attempts: int = 3,
        session_timeout: Optional[float] = DEFAULT_SESSION_TIMEOUT,
        max_open_sessions: int = DEFAULT_MAX_OPEN_SESSIONS,
        redact: Optional[Redactor] = None,
        handle_sigterm: bool = True,
    ) -> None:
        self.api_key = api_key or os.environ.get("BAGULA_API_KEY")
        self.endpoint = endpoint or os.environ.get("BAGULA_ENDPOINT") or DEFAULT_ENDPOINT
        if batch_size < 1 or max_queue_size < 1 or flush_interval <= 0 or server_error_attempts < 1:
            raise ValueError("batch_size, max_queue_size, server_error_attempts must be >= 1, flush_interval > 0")
        if session_timeout is not None and session_timeout <= 0:
            raise ValueError("session_timeout must be > 0 (or None: never)")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue_size = max_queue_size
        self.request_timeout = request_timeout
        self.shutdown_timeout = shutdown_timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        # None: retry an unavailable API until delivered (or until shutdown_timeout at close).
        self.max_attempts = max_attempts
        self.server_error_attempts = server_error_attempts
        self.session_timeout = session_timeout
        self.max_open_sessions = max_open_sessions
        self.redact = redact
        self.enabled = bool(self.api_key)
        if not self.enabled:
            log.error("bagula: no API key (pass api_key= or set BAGULA_API_KEY); sessions will be dropped")
        self._tracker: Optional[SessionTracker] = None
        self._reset_state()
        _live_clients.add(self)
        if handle_sigterm:
            _install_sigterm_handler()

    # ------------------------------------------------------------------ state

    def _reset_state(self) -> None:
        """Fresh locks, queue and thread: at construction and in a forked child."""
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._queue: Deque[Tuple[int, float, Dict[str, Any]]] = collections.deque()
        self._back: Deque[_Batch] = collections.deque()  # batches sent to the back of the queue
        self._seq = 0
        self._pending = 0  # accepted and not yet settled (queued, at the back, in flight)
        self._flush_requested = False
        self._closing = False
        self._settled_at_close = False
        self._deadline = math.inf
        self._next_sweep = math.inf
        self._failures = 0  # failed attempts in a row, on any batch: what the backoff grows with
        self._retry_at = 0.0
        self._worker: Optional[threading.Thread] = None
        self._transport: Optional[HttpTransport] = None
        self._counters: Dict[str, int] = collections.Counter()
        self._dropped: Dict[str, int] = collections.Counter()
        if self._tracker is not None:
            # The parent still owns (and will send) its open sessions.
            self._tracker._after_fork_in_child()

    def _after_fork_in_child(self) -> None:
        # The parent still owns (and will send) what was queued before the fork.
        self._reset_state()

    def _ensure_worker(self) -> None:
        """Under the lock: the sender thread, started on first use."""
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="bagula-sender", daemon=True)
            self._worker.start()

    # ------------------------------------------------------------------ public

    def get_session_tracker(self) -> SessionTracker:
        if self._tracker is None:
            self._tracker = SessionTracker(self, session_timeout=self.session_timeout,
                                           max_open_sessions=self.max_open_sessions)
            if self.session_timeout is not None:
                with self._cond:
                    self._next_sweep = time.monotonic() + self._sweep_interval()
                    self._ensure_worker()
                    self._cond.notify_all()
        return self._tracker

    def stats(self) -> Dict[str, Any]:
        """Counters: sent (acknowledged), duplicates, rejected, retried, batches, abandoned
        (sessions sent as abandoned), dropped by reason, queued (not yet acknowledged), open."""
        with self._cond:
            return {
                "sent": self._counters["sent"],
                "duplicates": self._counters["duplicates"],
                "rejected": self._counters["rejected"],
                "retried": self._counters["retried"],
                "batches": self._counters["batches"],
                "abandoned": self._tracker.abandoned if self._tracker is not None else 0,
                "dropped": dict(self._dropped),
                "queued": self._pending,
                "open": self._tracker.open_sessions if self._tracker is not None else 0,
            }

    def enqueue(self, session: Dict[str, Any]) -> bool:
        """Queue one finished session (wire format). Never blocks on the network; False if dropped."""
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
            self._seq += 1
            self._queue.append((self._seq, time.monotonic(), session))
            self._pending += 1
            if self._worker is None:
                self._ensure_worker()
            if len(self._queue) == self.batch_size:
                self._cond.notify_all()
        return True

    def flush(self, timeout: Optional[float] = 30.0) -> bool:
        """Send everything queued now (and the sessions past ``session_timeout``) and wait until
        the API has acknowledged it. Returns False if ``timeout`` seconds passed first (the
        sessions stay queued)."""
        if self._tracker is not None:
            self._tracker.abandon_expired()
        with self._cond:
            if self._pending == 0:
                return True
            self._flush_requested = True
            self._ensure_worker()
            self._cond.notify_all()
            settled = self._cond.wait_for(lambda: self._pending == 0, timeout)
            # Settled by close() giving up is not delivered.
            return settled and not (self._settled_at_close and self._dropped.get("shutdown"))

    def close(self, timeout: Optional[float] = None) -> bool:
        """Send open sessions as abandoned, flush, and stop the sender; waits at most ``timeout``
        (default ``shutdown_timeout``) seconds. What is still undelivered then is dropped and
        counted as "shutdown"; returns False when anything was."""
        timeout = self.shutdown_timeout if timeout is None else timeout
        if os.getpid() != self._pid:
            return True
        with self._cond:
            already_closing = self._closing
        if not already_closing and self._tracker is not None:
            self._tracker.abandon_all()
        with self._cond:
            self._closing = True
            self._deadline = min(self._deadline, time.monotonic() + timeout)
            self._cond.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(max(0.0, timeout))
            if worker.is_alive() and self._transport is not None:
                self._transport.abort()  # a request hanging past the deadline
                worker.join(1.0)
        with self._cond:
            if not self._settled_at_close:
                # Whatever the sender could not settle in time (queued, at the back, in flight).
                if self._pending:
                    self._dropped["shutdown"] += self._pending
                self._queue.clear()
                self._back.clear()
                self._pending = 0
                if self._dropped["shutdown"]:
                    log.warning("bagula: shutdown timeout; %d sessions not delivered", self._dropped["shutdown"])
            self._settled_at_close = True
            self._cond.notify_all()
            return not self._dropped.get("shutdown")

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

    def _sweep_interval(self) -> float:
        return min(60.0, max(0.05, (self.session_timeout or 60.0) / 4))

    def _next_work(self) -> Any:
        """Under no lock on return: a batch (fresh or from the back), "sweep", or None (stop)."""
        with self._cond:
            while True:
                if self._settled_at_close:
                    return None
                now = time.monotonic()
                if self._back and (not self._queue or self._queue[0][0] > self._back[0].after):
                    return self._back.popleft()
                wake = self._next_sweep
                if self._queue:
                    due = self._queue[0][1] + self.flush_interval
                    if (len(self._queue) >= self.batch_size or self._flush_requested or self._closing
                            or now >= due):
                        count = min(self.batch_size, len(self._queue))
                        return [self._queue.popleft()[2] for _ in range(count)]
                    wake = min(wake, due)
                elif self._closing:
                    return None
                elif not self._back:
                    self._flush_requested = False
                if now >= self._next_sweep:
                    self._next_sweep = now + self._sweep_interval()
                    return "sweep"
                self._cond.wait(None if wake == math.inf else wake - now)

    def _run(self) -> None:
        while True:
            work = self._next_work()
            if work is None:
                break
            try:
                if work == "sweep":
                    if self._tracker is not None:
                        self._tracker.abandon_expired()
                    continue
                batch = work if isinstance(work, _Batch) else self._encode(work)
                if batch is not None:
                    self._send(batch)
            except Exception:  # noqa: BLE001 - the sender must survive anything
                log.exception("bagula: unexpected error in the sender; dropping the batch")
                if isinstance(work, (list, _Batch)):
                    self._settle(len(work), dropped="internal_error")
            if self._gave_up():
                break
        if self._transport is not None:
            self._transport.close()

    def _encode(self, sessions: List[Dict[str, Any]]) -> Optional[_Batch]:
        """Each session on its own: one that cannot be encoded is dropped alone."""
        encoded: List[bytes] = []
        ids: List[str] = []
        for session in sessions:
            try:
                encoded.append(encode_session(session, self.redact))
                ids.append(str(session.get("sessionId")))
            except EncodeError as exc:
                reason = "redaction_error" if "redaction" in str(exc) else "unencodable"
                log.error("bagula: session %s cannot be sent (%s); dropping it", session.get("sessionId"), exc)
                self._settle(1, dropped=reason)
        return _Batch(encoded, ids) if encoded else None

    def _settle(self, n: int, *, dropped: Optional[str] = None) -> None:
        """Sessions leave the client (delivered, rejected or dropped): what flush waits for."""
        with self._cond:
            if self._settled_at_close:
                return  # close() already counted them
            if dropped is not None:
                self._dropped[dropped] += n
            self._pending -= n
            self._cond.notify_all()

    def _gave_up(self) -> bool:
        with self._cond:
            return self._closing and time.monotonic() >= self._deadline and self._pending > 0

    def _backoff(self, failures: int) -> float:
        base = min(self.max_backoff, self.initial_backoff * (2 ** (failures - 1)))
        return base * random.uniform(0.5, 1.0)

    def _wait_to_retry(self) -> bool:
        """Sleep until the backoff is over; False when closing and the shutdown deadline came first."""
        with self._cond:
            while True:
                now = time.monotonic()
                until = min(self._retry_at, self._deadline) if self._closing else self._retry_at
                if now >= until:
                    return not (self._closing and now >= self._deadline)
                self._cond.wait(until - now)

    def _to_the_back(self, *batches: _Batch) -> None:
        with self._cond:
            for batch in batches:
                batch.after = self._seq
                self._back.append(batch)
            self._cond.notify_all()

    def _send(self, batch: _Batch) -> None:
        """Send one batch until it is acknowledged, refused, sent to the back, or shutdown ends."""
        if self._transport is None:
            self._transport = HttpTransport(self.endpoint, self.api_key or "", self.request_timeout)
        while True:
            if not self._wait_to_retry():
                self._settle(len(batch), dropped="shutdown")
                return
            if batch.body is None:
                batch.body = encode_batch(batch.sessions, int(time.time() * 1000))
            reply = self._transport.post(batch.body)
            status = reply.status
            if status is not None and (status < 300 or status == 422 and _has_rejections(reply)):
                self._acknowledge(reply, len(batch))
                return
            if status == 413 and len(batch) > 1:
                for half in batch.halves():
                    self._send(half)
                return
            if status is not None and status not in UNAVAILABLE_STATUSES and status not in SERVER_ERROR_STATUSES:
                log.error("bagula: API refused a batch of %d sessions (%s): %s; dropping it",
                          len(batch), status, reply.body)
                self._settle(len(batch), dropped="client_error")
                return
            batch.attempts += 1
            with self._cond:
                self._failures += 1
                delay = reply.retry_after if reply.retry_after is not None else self._backoff(self._failures)
                self._retry_at = time.monotonic() + min(delay, self.max_backoff * 4)
            what = reply.error or status
            if self.max_attempts is not None and batch.attempts >= self.max_attempts:
                log.error("bagula: giving up on a batch of %d sessions after %d attempts (%s)",
                          len(batch), batch.attempts, what)
                self._settle(len(batch), dropped="retries_exhausted")
                return
            if status in SERVER_ERROR_STATUSES:
                batch.server_errors += 1
                if batch.server_errors >= self.server_error_attempts:
                    if len(batch) == 1:
                        log.error("bagula: the API failed on session %s %d times (%s): %s; dropping it",
                                  batch.ids[0], batch.server_errors, status, reply.body)
                        self._settle(1, dropped="server_error")
                        return
                    log.warning("bagula: the API failed on a batch of %d sessions %d times (%s); "
                                "splitting it and moving it behind newer sessions", len(batch), batch.server_errors,
                                status)
                    self._count("retried")
                    self._to_the_back(*batch.halves())
                    return
            log.info("bagula: send failed (%s); retry %d", what, batch.attempts)
            self._count("retried")

    def _count(self, name: str, n: int = 1) -> None:
        with self._cond:
            self._counters[name] += n

    def _acknowledge(self, reply: Reply, size: int) -> None:
        body = reply.body if isinstance(reply.body, dict) else {}
        rejected = body.get("rejected") or []
        for item in rejected:
            log.warning("bagula: API rejected session %s: %s", item.get("sessionId"), item.get("errors"))
        with self._cond:
            self._failures = 0
            self._retry_at = 0.0
            if self._settled_at_close:
                return
            self._counters["batches"] += 1
            self._counters["sent"] += size - len(rejected)
            self._counters["duplicates"] += int(body.get("duplicates") or 0)
            self._counters["rejected"] += len(rejected)
            self._pending -= size
            self._cond.notify_all()


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


_sigterm_installed = False


def _on_sigterm(signum: int, frame: Any) -> None:
    """Flush (bounded by each client's shutdown_timeout), then die of the signal as before.

    The flush runs in a thread of its own: the handler interrupts the main thread wherever it
    was, perhaps holding one of the client's locks for the microsecond an append takes; then
    the flush waits for a lock that is never released, and the join's bound ends the wait."""
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    bound = max((c.shutdown_timeout for c in list(_live_clients)), default=0.0) + 2.0
    closer = threading.Thread(target=_close_all_at_exit, name="bagula-sigterm", daemon=True)
    closer.start()
    closer.join(bound)
    os.kill(os.getpid(), signum)


def _install_sigterm_handler() -> None:
    """SIGTERM's default ends the process without atexit; flush first, but only where the
    application left SIGTERM alone (a handler of its own means it shuts down itself, and its
    normal exit runs the atexit flush) and only from the main thread (Python's rule)."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
            _sigterm_installed = True
    except (ValueError, OSError, AttributeError):  # not the main interpreter, or no SIGTERM
        pass


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_after_fork)
