"""Recording sessions as they happen: the seed's tracker calls, plus context managers."""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from datetime import datetime
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, TypeVar, Union

log = logging.getLogger("bagula_client")

Time = Union[int, float, datetime, None]
F = TypeVar("F", bound=Callable[..., Any])


def now_ms() -> int:
    return int(time.time() * 1000)


def to_ms(value: Time) -> Optional[float]:
    """Epoch milliseconds from epoch ms or a datetime (naive means local time, as in Python)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp() * 1000
    return value


def _never_raise(fallback: Any = None) -> Callable[[F], F]:
    """Instrumentation must not break the agent: log the fault and carry on."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception:  # noqa: BLE001
                log.exception("bagula: %s failed; the session may be incomplete", method.__name__)
                return fallback() if callable(fallback) else fallback

        return wrapper  # type: ignore[return-value]

    return decorate


def _tool_call_dict(tool: Any) -> Dict[str, Any]:
    """A tool call given as a dict (snake or camel case) or an object with the same attributes."""

    def get(*names: str) -> Any:
        for name in names:
            if isinstance(tool, dict):
                if name in tool:
                    return tool[name]
            elif hasattr(tool, name):
                return getattr(tool, name)
        return None

    start, end = to_ms(get("start_time", "startTime")), to_ms(get("end_time", "endTime"))
    latency = get("latency_ms", "latencyMs")
    if latency is None and start is not None and end is not None:
        latency = end - start
    return {
        "toolId": str(get("tool_id", "toolId") or uuid.uuid4().hex),
        "toolName": get("tool_name", "toolName"),
        "arguments": get("arguments"),
        "startTime": start if start is not None else now_ms(),
        "endTime": end,
        "result": get("result"),
        "error": None if get("error") is None else str(get("error")),
        "latencyMs": latency,
    }


class SessionSink(Protocol):
    """Where completed sessions go (the client's queue)."""

    def enqueue(self, session: Dict[str, Any]) -> bool: ...


class SessionTracker:
    """Builds sessions in the wire format; completed ones go to the client's queue."""

    def __init__(self, client: SessionSink) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._open: Dict[str, Dict[str, Any]] = {}

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

    @_never_raise(fallback=lambda: str(uuid.uuid4()))
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
        session_id = str(session_id or uuid.uuid4())
        session = {
            "sessionId": session_id,
            "agentName": agent_name,
            "userId": user_id,
            "initialRequest": request if isinstance(request, str) else str(request),
            "startTime": to_ms(start_time) or now_ms(),
            "endTime": None,
            "metadata": metadata,
            "tags": list(tags) if tags is not None else None,
            "parentSessionId": str(parent_session_id) if parent_session_id else None,
            "turns": [],
            "finalOutcome": None,
        }
        with self._lock:
            self._open[session_id] = session
        return session_id

    @_never_raise(fallback=lambda: uuid.uuid4().hex)
    def start_turn(self, session_id: str, trigger: Any, *, turn_id: Optional[str] = None, timestamp: Time = None) -> str:
        with self._lock:
            session = self._session(session_id)
            number = len(session["turns"]) + 1
            turn_id = str(turn_id or f"turn-{number}")
            session["turns"].append({
                "turnId": turn_id,
                "turnNumber": number,
                "timestamp": to_ms(timestamp) or now_ms(),
                "trigger": trigger,
                "llmCalls": [],
                "agentResponse": None,
                "userFeedback": None,
            })
        return turn_id

    @_never_raise()
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
        start, end = to_ms(start_time), to_ms(end_time)
        if latency_ms is None and start is not None and end is not None:
            latency_ms = end - start
        if tokens_total is None and tokens_input is not None and tokens_output is not None:
            tokens_total = tokens_input + tokens_output
        with self._lock:
            turn = self._turn(self._session(session_id), turn_id)
            call_id = str(call_id or f"{turn_id}-llm-{len(turn['llmCalls']) + 1}")
            turn["llmCalls"].append({
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

    @_never_raise()
    def record_agent_response(
        self, session_id: str, turn_id: str, message: Any = None, tool_calls: Optional[Iterable[Any]] = None
    ) -> None:
        calls = [_tool_call_dict(t) for t in (tool_calls or ())]
        with self._lock:
            turn = self._turn(self._session(session_id), turn_id)
            turn["agentResponse"] = {"message": message, "toolCalls": calls}

    @_never_raise()
    def record_user_feedback(self, session_id: str, turn_id: str, feedback: Any) -> None:
        with self._lock:
            self._turn(self._session(session_id), turn_id)["userFeedback"] = feedback

    @_never_raise(fallback=False)
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
        """Close the session and queue it for sending. False if it was unknown or dropped."""
        with self._lock:
            session = self._open.pop(session_id, None)
        if session is None:
            log.warning("bagula: complete_session for unknown or already completed session %s", session_id)
            return False
        session["endTime"] = to_ms(end_time) or max(now_ms(), session["startTime"])
        session["finalOutcome"] = {
            "status": status,
            "result": result,
            "userSatisfaction": user_satisfaction,
            "confidence": confidence,
        }
        return self._client.enqueue(session)

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
        """Record the agent's response; tool calls timed with ``tool_call`` are included."""
        self._responded = True
        calls = self.tool_calls + [_tool_call_dict(t) for t in (tool_calls or ())]
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
        self.turn.tool_calls.append(_tool_call_dict({
            "tool_id": self.tool_id, "tool_name": self.tool_name, "arguments": self.arguments,
            "start_time": self._start, "end_time": end, "result": self.result, "error": error,
        }))
