"""The SDK's camelCase wire format, validated one session at a time.

Every fault a session can carry is found here, before anything is written, so a
bad session is rejected on its own and never fails the bulk write of the good
ones beside it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from pydantic.alias_generators import to_camel

# Epoch milliseconds between 1970 and 2200: outside that is a unit mistake.
MAX_EPOCH_MS = 7_258_118_400_000
INT4_MAX = 2_147_483_647

EpochMs = Annotated[float, Strict(), Field(ge=0, le=MAX_EPOCH_MS)]
Count = Annotated[int, Strict(), Field(ge=0, le=INT4_MAX)]
Millis = Annotated[float, Strict(), Field(ge=0, le=1e12)]
Money = Annotated[float, Strict(), Field(ge=0, le=1e9)]
Id = Annotated[str, Strict(), Field(min_length=1, max_length=255)]
Name = Annotated[str, Strict(), Field(min_length=1, max_length=255)]
Text = Annotated[str, Strict()]
StrictUuid = Annotated[uuid.UUID, Field()]


class WireModel(BaseModel):
    # Unknown fields are kept (stored in the row's `extra` JSONB), never rejected.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=False
    )

    @property
    def extras(self) -> dict[str, Any] | None:
        return self.model_extra or None


class LlmMetrics(WireModel):
    tokens_input: Count | None = None
    tokens_output: Count | None = None
    tokens_total: Count | None = None
    cost_usd: Money | None = None
    latency_ms: Millis | None = None


class LlmCall(WireModel):
    call_id: Id
    provider: Annotated[str, Strict(), Field(min_length=1, max_length=50)]
    model: Annotated[str, Strict(), Field(min_length=1, max_length=100)]
    start_time: EpochMs
    end_time: EpochMs | None = None
    messages: Any = None
    response: Any = None
    metrics: LlmMetrics | None = None


class ToolCall(WireModel):
    tool_id: Id
    tool_name: Name
    arguments: Any = None
    start_time: EpochMs
    end_time: EpochMs | None = None
    result: Any = None
    error: Text | None = None
    latency_ms: Millis | None = None


class AgentResponse(WireModel):
    message: Any = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class Turn(WireModel):
    turn_id: Id
    turn_number: Count
    timestamp: EpochMs
    trigger: Any
    llm_calls: list[LlmCall] = Field(default_factory=list)
    agent_response: AgentResponse | None = None
    user_feedback: Any = None


class FinalOutcome(WireModel):
    status: Annotated[str, Strict(), Field(min_length=1, max_length=50)]
    result: Any = None
    user_satisfaction: Annotated[float, Strict(), Field(ge=1, le=5)] | None = None
    confidence: Annotated[float, Strict(), Field(ge=0, le=1)] | None = None


class Session(WireModel):
    session_id: StrictUuid
    agent_name: Name
    user_id: Annotated[str, Strict(), Field(max_length=255)] | None = None
    initial_request: Text
    start_time: EpochMs
    end_time: EpochMs | None = None
    metadata: dict[str, Any] | None = None
    tags: list[Annotated[str, Strict(), Field(max_length=255)]] | None = None
    parent_session_id: StrictUuid | None = None
    turns: list[Turn] = Field(default_factory=list)
    final_outcome: FinalOutcome | None = None


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass(frozen=True)
class Rejection:
    index: int
    session_id: Any
    errors: list[FieldError]


def field_path(loc: tuple[Any, ...]) -> str:
    """('turns', 0, 'llmCalls', 0, 'metrics') -> 'turns[0].llmCalls[0].metrics'"""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _pydantic_errors(exc: ValidationError) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        # Union members add their type name to the location; it means nothing to a client.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        errors.append(FieldError(field_path(loc), message))
    return errors


def bad_text(value: Any, path: str = "") -> list[FieldError]:
    """Strings PostgreSQL cannot store: NUL characters and invalid UTF-8 (lone surrogates)."""
    found: list[FieldError] = []
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                found.append(FieldError(where, "text contains a NUL character"))
            else:
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    found.append(FieldError(where, "text is not valid UTF-8"))
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and bad_text(key):
                    found.append(FieldError(child_path, "field name is not valid text"))
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    found.sort(key=lambda e: e.field)
    return found


def _consistency_errors(session: Session) -> list[FieldError]:
    """Cross-field rules: times in order, ids unique within the session."""
    errors: list[FieldError] = []

    def check_span(path: str, start: float, end: float | None) -> None:
        if end is not None and end < start:
            errors.append(FieldError(f"{path}endTime", "endTime is before startTime"))

    def check_unique(seen: set[str], value: str, path: str, what: str) -> None:
        if value in seen:
            errors.append(FieldError(path, f"duplicate {what} {value!r} within the session"))
        seen.add(value)

    check_span("", session.start_time, session.end_time)
    turn_ids: set[str] = set()
    call_ids: set[str] = set()
    tool_ids: set[str] = set()
    for t, turn in enumerate(session.turns):
        check_unique(turn_ids, turn.turn_id, f"turns[{t}].turnId", "turnId")
        for c, call in enumerate(turn.llm_calls):
            path = f"turns[{t}].llmCalls[{c}]."
            check_unique(call_ids, call.call_id, path + "callId", "callId")
            check_span(path, call.start_time, call.end_time)
        if turn.agent_response is not None:
            for c, tool in enumerate(turn.agent_response.tool_calls):
                path = f"turns[{t}].agentResponse.toolCalls[{c}]."
                check_unique(tool_ids, tool.tool_id, path + "toolId", "toolId")
                check_span(path, tool.start_time, tool.end_time)
    return errors


def validate_session(raw: Any, *, check_text: bool) -> Session | list[FieldError]:
    """A valid Session, or every fault found in it.

    ``check_text`` walks all strings for NUL and invalid UTF-8; the caller skips
    it when the raw body proves neither can occur (the common, fast case).
    """
    if not isinstance(raw, dict):
        return [FieldError("", "a session must be a JSON object")]
    errors = bad_text(raw) if check_text else []
    try:
        session = Session.model_validate(raw)
    except ValidationError as exc:
        return errors + _pydantic_errors(exc)
    errors += _consistency_errors(session)
    return errors or session


def raw_session_id(raw: Any) -> Any:
    """The sessionId as sent, for the rejection report (may be anything, or absent)."""
    if isinstance(raw, dict):
        value = raw.get("sessionId")
        if value is None or isinstance(value, (str, int, float, bool)):
            return value if not isinstance(value, str) or not bad_text(value) else None
    return None
