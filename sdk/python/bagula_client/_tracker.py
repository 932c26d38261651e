"""Recording sessions as they happen: the seed's tracker calls, plus context managers.

Every call here runs on the agent's thread, so each one is a few dict operations under a
lock and nothing else: ids are formatted from ``os.urandom``, no encoding, no I/O. A
session leaves the tracker when it is completed, or when it is abandoned (not completed
within ``session_timeout``, too many sessions open, or the client closing): then it is
sent with status ``abandoned``, because an unfinished session is what an on-call engineer
most wants to see.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Union

log = logging.getLogger("bagula_client")

Time = Union[int, float, datetime, None]

ABANDONED = "abandoned"
DEFAULT_SESSION_TIMEOUT = 1800.0
DEFAULT_MAX_OPEN_SESSIONS = 10_000

# Hex digit -> the same digit with the RFC 4122 variant bits (10xx) set.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_session_id() -> str:
    """A random (version 4) UUID as text, three times faster than ``str(uuid.uuid4())``."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def to_ms(value: Time) -> Optional[float]:
    """Epoch milliseconds from epoch ms or a datetime (naive means local time, as in Python)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp() * 1000
    return value


def _get(tool: Any, snake: str, camel: str) -> Any:
    if isinstance(tool, dict):
        value = tool.get(snake)
        return tool.get(camel) if value is None else value
    value = getattr(tool, snake, None)
    return getattr(tool, camel, None) if value is None else value


def tool_call_record(tool: Any, turn_id: str, position: int, now: Callable[[], float] = now_ms) -> Dict[str, Any]:
    """A tool call in the wire format, from a dict (snake or camel case) or an object with the same
    attributes. ``toolId`` defaults to ``<turnId>-tool-<position>``, unique within the session."""
    if type(tool) is dict:  # the common case, without a call per field
        get = tool.get
        tool_id, name, start, end = get("tool_id"), get("tool_name"), get("start_time"), get("end_time")
        latency = get("latency_ms")
        if tool_id is None:
            tool_id = get("toolId")
        if name is None:
            name = get("toolName")
        if start is None:
            start = get("startTime")
        if end is None:
            end = get("endTime")
        if latency is None:
            latency = get("latencyMs")
        arguments, result, error = get("arguments"), get("result"), get("error")
    else:
        tool_id, name = _get(tool, "tool_id", "toolId"), _get(tool, "tool_name", "toolName")
        start, end = _get(tool, "start_time", "startTime"), _get(tool, "end_time", "endTime")
        latency = _get(tool, "latency_ms", "latencyMs")
        arguments, result, error = getattr(tool, "arguments", None), getattr(tool, "result", None), getattr(
            tool, "error", None)
    if start is not None and type(start) is not int and type(start) is not float:
        start = to_ms(start)
    if end is not None and type(end) is not int and type(end) is not float:
        end = to_ms(end)
    if latency is None and start is not None and end is not None:
        latency = end - start
    return {
        "toolId": f"{turn_id}-tool-{position}" if tool_id is None else str(tool_id),
        "toolName": name,
        "arguments": arguments,
        "startTime": now() if start is None else start,
        "endTime": end,
        "result": result,
        "error": None if error is None else str(error),
        "latencyMs": latency,
    }


def last_activity(session: Dict[str, Any]) -> float:
    """The latest time recorded in a session: what an abandoned session's end time is."""
    latest = session["startTime"]
    for turn in session["turns"]:
        latest = max(latest, turn["timestamp"] or 0)
        for call in turn["llmCalls"]:
            latest = max(latest, call["endTime"] or call["startTime"] or 0)
        response = turn["agentResponse"]
        for tool in (response or {}).get("toolCalls") or ():
            latest = max(latest, tool["endTime"] or tool["startTime"] or 0)
    return latest


class SessionSink(Protocol):
    """Where finished sessions go (the client's queue)."""

    def enqueue(self, session: Dict[str, Any]) -> bool: ...


class SessionTracker:
    """Builds sessions in the wire format; finished ones go to the sink (the client's queue).

    ``session_timeout`` (seconds, None for never) and ``max_open_sessions`` bound what is
    kept in memory: past either, the oldest open sessions are sent as ``abandoned``. The
    client checks the timeout from its sender thread; ``abandon_expired`` does it on demand.
    ``clock`` (epoch ms) and ``monotonic`` (seconds) are for tests.
    """

    def __init__(
        self,
        client: SessionSink,
        *,
        session_timeout: Optional[float] = DEFAULT_SESSION_TIMEOUT,
        max_open_sessions: int = DEFAULT_MAX_OPEN_SESSIONS,
        clock: Optional[Callable[[], float]] = None,
        monotonic: Optional[Callable[[], float]] = None,
    ) -> None:
        if max_open_sessions < 1:
            raise ValueError("max_open_sessions must be >= 1")
        self._client = client
        self._lock = threading.Lock()
        # Insertion order is start order: the oldest open session is always first.
        self._open: Dict[str, Dict[str, Any]] = {}
        self._started: Dict[str, float] = {}
        self.session_timeout = session_timeout
        self.max_open_sessions = max_open_sessions
        self._now = clock or now_ms
        self._monotonic = monotonic or time.monotonic
        self.abandoned = 0

    def _after_fork_in_child(self) -> None:
        # A lock held by another thread at the fork would never be released here; the open
        # sessions belong to the parent, which completes (or abandons) and sends them.
        self._lock = threading.Lock()
        self._open = {}
        self._started = {}

    @property
    def open_sessions(self) -> int:
        return len(self._open)

    def _session(self, session_id: str) -> Dict[str, Any]:
        session = self._open.get(session_id)
        if session is None:
            raise KeyError(f"unknown or already completed session {session_id!r}")
        return session

    @staticmethod
    def _turn(session: Dict[str, Any], turn_id: str) -> Dict[str, Any]:
        for turn in reversed(session["turns"]):
            if turn["turnId"] == turn_id:
                return turn
        raise KeyError(f"unknown turn {turn_id!r} in session {session['sessionId']}")

    # Each recording method catches everything itself (rather than through a decorator,
    # which would add a call per call): instrumentation must never break the agent.

    def start_session(
        self,
        agent_name: str,
        request: Any,
        user_id: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
        parent_session_id: Optional[str] = None,
        *,
        tags: Optional[Iterable[str]] = None,
        session_id: Optional[str] = None,
        start_time: Time = None,
    ) -> str:
        try:
            session_id = new_session_id() if session_id is None else str(session_id)
            session = {
                "sessionId": session_id,
                "agentName": agent_name,
                "userId": user_id,
                "initialRequest": request if isinstance(request, str) else str(request),
                "startTime": self._now() if start_time is None else to_ms(start_time),
                "endTime": None,
                "metadata": metadata,
                "tags": None if tags is None else list(tags),
                "parentSessionId": str(parent_session_id) if parent_session_id else None,
                "turns": [],
                "finalOutcome": None,
            }
            evicted = None
            with self._lock:
                if len(self._open) >= self.max_open_sessions:
                    evicted = self._pop_oldest()
                self._open[session_id] = session
                self._started[session_id] = self._monotonic()
            if evicted is not None:
                log.warning("bagula: more than %d sessions open; sending the oldest, %s, as abandoned",
                            self.max_open_sessions, evicted["sessionId"])
                self._send_abandoned([evicted])
            return session_id
        except Exception:  # noqa: BLE001
            log.exception("bagula: start_session failed; the session will not be recorded")
            return new_session_id() if session_id is None else str(session_id)

    def start_turn(self, session_id: str, trigger: Any, *, turn_id: Optional[str] = None, timestamp: Time = None) -> str:
        try:
            with self._lock:
                turns = self._session(session_id)["turns"]
                number = len(turns) + 1
                turn_id = f"turn-{number}" if turn_id is None else str(turn_id)
                turns.append({
                    "turnId": turn_id,
                    "turnNumber": number,
                    "timestamp": self._now() if timestamp is None else to_ms(timestamp),
                    "trigger": trigger,
                    "llmCalls": [],
                    "agentResponse": None,
                    "userFeedback": None,
                })
            return turn_id
        except Exception:  # noqa: BLE001
            log.exception("bagula: start_turn failed; the session may be incomplete")
            return turn_id or "turn-unknown"

    def record_llm_call(
        self,
        session_id: str,
        turn_id: str,
        *,
        provider: str,
        model: str,
        start_time: Time,
        end_time: Time,
        messages: Any = None,
        response: Any = None,
        tokens_input: Optional[int] = None,
        tokens_output: Optional[int] = None,
        tokens_total: Optional[int] = None,
        cost_usd: Optional[float] = None,
        latency_ms: Optional[float] = None,
        call_id: Optional[str] = None,
    ) -> Optional[str]:
        try:
            start, end = to_ms(start_time), to_ms(end_time)
            if latency_ms is None and start is not None and end is not None:
                latency_ms = end - start
            if tokens_total is None and tokens_input is not None and tokens_output is not None:
                tokens_total = tokens_input + tokens_output
            with self._lock:
                calls = self._turn(self._session(session_id), turn_id)["llmCalls"]
                call_id = f"{turn_id}-llm-{len(calls) + 1}" if call_id is None else str(call_id)
                calls.append({
                    "callId": call_id,
                    "provider": provider,
                    "model": model,
                    "startTime": start,
                    "endTime": end,
                    "messages": messages,
                    "response": response,
                    "metrics": {
                        "tokensInput": tokens_input,
                        "tokensOutput": tokens_output,
                        "tokensTotal": tokens_total,
                        "costUsd": cost_usd,
                        "latencyMs": latency_ms,
                    },
                })
            return call_id
        except Exception:  # noqa: BLE001
            log.exception("bagula: record_llm_call failed; the session may be incomplete")
            return None

    def record_agent_response(
        self, session_id: str, turn_id: str, message: Any = None, tool_calls: Optional[Iterable[Any]] = None
    ) -> None:
        try:
            calls = [tool_call_record(t, turn_id, i, self._now) for i, t in enumerate(tool_calls or (), 1)]
            with self._lock:
                turn = self._turn(self._session(session_id), turn_id)
                turn["agentResponse"] = {"message": message, "toolCalls": calls}
        except Exception:  # noqa: BLE001
            log.exception("bagula: record_agent_response failed; the session may be incomplete")

    def record_user_feedback(self, session_id: str, turn_id: str, feedback: Any) -> None:
        try:
            with self._lock:
                self._turn(self._session(session_id), turn_id)["userFeedback"] = feedback
        except Exception:  # noqa: BLE001
            log.exception("bagula: record_user_feedback failed; the session may be incomplete")

    def complete_session(
        self,
        session_id: str,
        status: str,
        result: Any = None,
        user_satisfaction: Optional[float] = None,
        confidence: Optional[float] = None,
        *,
        end_time: Time = None,
    ) -> bool:
        """Close the session and queue it for sending. False if it was unknown (never started,
        already completed, or already sent as abandoned) or dropped."""
        try:
            with self._lock:
                session = self._open.pop(session_id, None)
                if session is not None:
                    del self._started[session_id]
            if session is None:
                log.warning("bagula: complete_session for unknown, completed or abandoned session %s", session_id)
                return False
            end = self._now() if end_time is None else to_ms(end_time)
            session["endTime"] = end if end >= session["startTime"] else session["startTime"]
            session["finalOutcome"] = {
                "status": status,
                "result": result,
                "userSatisfaction": user_satisfaction,
                "confidence": confidence,
            }
            return self._client.enqueue(session)
        except Exception:  # noqa: BLE001
            log.exception("bagula: complete_session failed; the session may be lost")
            return False

    # ------------------------------------------------------------------ abandoned sessions

    def _pop_oldest(self) -> Dict[str, Any]:
        """Under the lock: remove and return the oldest open session."""
        oldest = next(iter(self._open))
        del self._started[oldest]
        return self._open.pop(oldest)

    def _send_abandoned(self, sessions: List[Dict[str, Any]]) -> None:
        for session in sessions:
            try:
                session["endTime"] = last_activity(session)
            except Exception:  # noqa: BLE001 - a malformed time recorded by the agent
                session["endTime"] = session["startTime"]
            session["finalOutcome"] = {"status": ABANDONED, "result": None, "userSatisfaction": None,
                                       "confidence": None}
            self.abandoned += 1
            self._client.enqueue(session)

    def abandon_expired(self) -> int:
        """Send every session open for longer than ``session_timeout`` as abandoned; how many."""
        if self.session_timeout is None:
            return 0
        cutoff = self._monotonic() - self.session_timeout
        with self._lock:
            expired: List[Dict[str, Any]] = []
            for session_id, started in self._started.items():
                if started > cutoff:
                    break
                expired.append(self._open[session_id])
            for session in expired:
                del self._open[session["sessionId"]], self._started[session["sessionId"]]
        if expired:
            log.warning("bagula: %d sessions not completed within %.0f s; sending them as abandoned",
                        len(expired), self.session_timeout)
            self._send_abandoned(expired)
        return len(expired)

    def abandon_all(self) -> int:
        """Send every open session as abandoned (the client closing); how many."""
        with self._lock:
            sessions = list(self._open.values())
            self._open.clear()
            self._started.clear()
        if sessions:
            log.warning("bagula: %d sessions still open at shutdown; sending them as abandoned", len(sessions))
            self._send_abandoned(sessions)
        return len(sessions)

    # ------------------------------------------------------------------ Pythonic forms

    def session(
        self,
        agent_name: str,
        request: Any,
        user_id: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
        parent_session_id: Optional[str] = None,
        **kwargs: Any,
    ) -> "SessionScope":
        """``with tracker.session(...) as s:`` completes the session on exit: "success"
        unless ``s.complete(...)`` said otherwise, "error" (with the exception) if the block raises."""
        session_id = self.start_session(agent_name, request, user_id, metadata, parent_session_id, **kwargs)
        return SessionScope(self, session_id)


class SessionScope:
    def __init__(self, tracker: SessionTracker, session_id: str) -> None:
        self.tracker = tracker
        self.session_id = session_id
        self.completed = False

    def __enter__(self) -> "SessionScope":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        elif not self.completed:
            self.complete("success")

    def complete(self, status: str, result: Any = None, user_satisfaction: Optional[float] = None,
                 confidence: Optional[float] = None) -> None:
        if not self.completed:
            self.completed = True
            self.tracker.complete_session(self.session_id, status, result, user_satisfaction, confidence)

    def fail(self, exc: BaseException) -> None:
        self.complete("error", result=f"{type(exc).__name__}: {exc}")

    def feedback(self, turn_id: str, feedback: Any) -> None:
        self.tracker.record_user_feedback(self.session_id, turn_id, feedback)

    def turn(self, trigger: Any) -> "TurnScope":
        return TurnScope(self, self.tracker.start_turn(self.session_id, trigger))


class TurnScope:
    """A turn: times LLM and tool calls made inside it; records the agent response on exit."""

    def __init__(self, session: SessionScope, turn_id: str) -> None:
        self.session = session
        self.turn_id = turn_id
        self.tool_calls: List[Dict[str, Any]] = []
        self.message: Any = None
        self._responded = False

    def __enter__(self) -> "TurnScope":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._responded:
            self.respond(self.message)
        if exc is not None:
            self.session.fail(exc)

    def respond(self, message: Any = None, tool_calls: Optional[Iterable[Any]] = None) -> None:
        """Record the agent's response; tool calls timed with ``tool_call`` come first."""
        self._responded = True
        calls = self.tool_calls + list(tool_calls or ())
        self.session.tracker.record_agent_response(self.session.session_id, self.turn_id, message, calls)

    def llm_call(self, provider: str, model: str, messages: Any = None) -> "LlmCallTimer":
        return LlmCallTimer(self, provider, model, messages)

    def tool_call(self, tool_name: str, arguments: Any = None, tool_id: Optional[str] = None) -> "ToolCallTimer":
        return ToolCallTimer(self, tool_name, arguments, tool_id)


class LlmCallTimer:
    """``with turn.llm_call("openai", "gpt-4o") as call: ...; call.response = ...; call.usage(...)``"""

    def __init__(self, turn: TurnScope, provider: str, model: str, messages: Any) -> None:
        self.turn, self.provider, self.model, self.messages = turn, provider, model, messages
        self.response: Any = None
        self.tokens_input: Optional[int] = None
        self.tokens_output: Optional[int] = None
        self.cost_usd: Optional[float] = None

    def usage(self, tokens_input: Optional[int] = None, tokens_output: Optional[int] = None,
              cost_usd: Optional[float] = None) -> None:
        self.tokens_input, self.tokens_output, self.cost_usd = tokens_input, tokens_output, cost_usd

    def __enter__(self) -> "LlmCallTimer":
        self._start = time.time() * 1000
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        end = time.time() * 1000
        response = self.response
        if exc is not None and response is None:
            response = {"error": f"{type(exc).__name__}: {exc}"}
        self.turn.session.tracker.record_llm_call(
            self.turn.session.session_id, self.turn.turn_id, provider=self.provider, model=self.model,
            start_time=self._start, end_time=end, messages=self.messages, response=response,
            tokens_input=self.tokens_input, tokens_output=self.tokens_output, cost_usd=self.cost_usd,
        )


class ToolCallTimer:
    """``with turn.tool_call("search", {"q": ...}) as tool: tool.result = search(...)``;
    an exception in the block is recorded as the tool's error (and propagates)."""

    def __init__(self, turn: TurnScope, tool_name: str, arguments: Any, tool_id: Optional[str]) -> None:
        self.turn, self.tool_name, self.arguments, self.tool_id = turn, tool_name, arguments, tool_id
        self.result: Any = None
        self.error: Optional[str] = None

    def __enter__(self) -> "ToolCallTimer":
        self._start = time.time() * 1000
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        end = time.time() * 1000
        error = self.error if exc is None else f"{type(exc).__name__}: {exc}"
        self.turn.tool_calls.append({
            "tool_id": self.tool_id, "tool_name": self.tool_name, "arguments": self.arguments,
            "start_time": self._start, "end_time": end, "result": self.result, "error": error,
        })
