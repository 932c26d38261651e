"""The SDK's camelCase wire format, validated one session at a time.

Every fault a session can carry is found here, before anything is written, so a
bad session is rejected on its own and never fails the bulk write of the good
ones beside it.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import msgspec
from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

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
StrictUuid = uuid.UUID

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)


def from_epoch_ms(ms: float | None) -> datetime | None:
    """Wire time (epoch milliseconds) -> datetime (UTC)."""
    return None if ms is None else EPOCH + ms * MS


def epoch_ms(moment: datetime | None) -> int | float | None:
    """datetime -> wire time: epoch milliseconds, an integer unless it has sub-millisecond digits."""
    if moment is None:
        return None
    value = (moment - EPOCH) / MS
    return int(value) if value.is_integer() else value


# TypedDicts rather than models: validation returns plain dicts, about three
# times faster on this hot path. Unknown fields are kept (extra="allow") and end
# up in the row's `extra` JSONB.
WIRE = ConfigDict(extra="allow")


@with_config(WIRE)
class LlmMetrics(TypedDict):
    tokensInput: NotRequired[Count | None]
    tokensOutput: NotRequired[Count | None]
    tokensTotal: NotRequired[Count | None]
    costUsd: NotRequired[Money | None]
    latencyMs: NotRequired[Millis | None]


@with_config(WIRE)
class LlmCall(TypedDict):
    callId: Id
    provider: Annotated[str, Strict(), Field(min_length=1, max_length=50)]
    model: Annotated[str, Strict(), Field(min_length=1, max_length=100)]
    startTime: EpochMs
    endTime: NotRequired[EpochMs | None]
    messages: NotRequired[Any]
    response: NotRequired[Any]
    metrics: NotRequired[LlmMetrics | None]


@with_config(WIRE)
class ToolCall(TypedDict):
    toolId: Id
    toolName: Name
    arguments: NotRequired[Any]
    startTime: EpochMs
    endTime: NotRequired[EpochMs | None]
    result: NotRequired[Any]
    error: NotRequired[Text | None]
    latencyMs: NotRequired[Millis | None]


@with_config(WIRE)
class AgentResponse(TypedDict):
    message: NotRequired[Any]
    toolCalls: NotRequired[list[ToolCall]]


@with_config(WIRE)
class Turn(TypedDict):
    turnId: Id
    turnNumber: Count
    timestamp: EpochMs
    trigger: Any
    llmCalls: NotRequired[list[LlmCall]]
    agentResponse: NotRequired[AgentResponse | None]
    userFeedback: NotRequired[Any]


@with_config(WIRE)
class FinalOutcome(TypedDict):
    status: Annotated[str, Strict(), Field(min_length=1, max_length=50)]
    result: NotRequired[Any]
    userSatisfaction: NotRequired[Annotated[float, Strict(), Field(ge=1, le=5)] | None]
    confidence: NotRequired[Annotated[float, Strict(), Field(ge=0, le=1)] | None]


@with_config(WIRE)
class Session(TypedDict):
    sessionId: StrictUuid
    agentName: Name
    userId: NotRequired[Annotated[str, Strict(), Field(max_length=255)] | None]
    initialRequest: Text
    startTime: EpochMs
    endTime: NotRequired[EpochMs | None]
    metadata: NotRequired[dict[str, Any] | None]
    tags: NotRequired[list[Annotated[str, Strict(), Field(max_length=255)]] | None]
    parentSessionId: NotRequired[StrictUuid | None]
    turns: NotRequired[list[Turn]]
    finalOutcome: NotRequired[FinalOutcome | None]


SESSION_ADAPTER = TypeAdapter(Session)


# ---- the common case, decoded and checked in one pass ------------------------------------
# msgspec decodes a batch straight into these structs: a third of the time of orjson and
# pydantic together (about 40 against 100-200 us per session here). It is a fast path only:
# a batch it does not take whole (a type or range fault, a field the wire does not declare,
# text or a number the exact parser must look at) goes the pydantic way above, which finds and
# reports every fault. The structs mirror the TypedDicts field for field; a test holds them
# together, and another that whatever they accept, pydantic accepts and returns the same.
TYPED = {"forbid_unknown_fields": True, "frozen": True}
TypedEpochMs = Annotated[float, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]
TypedCount = Annotated[int, msgspec.Meta(ge=0, le=INT4_MAX)]
TypedMillis = Annotated[float, msgspec.Meta(ge=0, le=1e12)]
TypedId = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
UNSET = msgspec.UNSET
Unset = msgspec.UnsetType


class TypedLlmMetrics(msgspec.Struct, **TYPED):
    tokensInput: TypedCount | None | Unset = UNSET
    tokensOutput: TypedCount | None | Unset = UNSET
    tokensTotal: TypedCount | None | Unset = UNSET
    costUsd: Annotated[float, msgspec.Meta(ge=0, le=1e9)] | None | Unset = UNSET
    latencyMs: TypedMillis | None | Unset = UNSET


class TypedLlmCall(msgspec.Struct, **TYPED):
    callId: TypedId
    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    startTime: TypedEpochMs
    endTime: TypedEpochMs | None | Unset = UNSET
    messages: Any = UNSET
    response: Any = UNSET
    metrics: TypedLlmMetrics | None | Unset = UNSET


class TypedToolCall(msgspec.Struct, **TYPED):
    toolId: TypedId
    toolName: TypedId
    startTime: TypedEpochMs
    arguments: Any = UNSET
    endTime: TypedEpochMs | None | Unset = UNSET
    result: Any = UNSET
    error: str | None | Unset = UNSET
    latencyMs: TypedMillis | None | Unset = UNSET


class TypedAgentResponse(msgspec.Struct, **TYPED):
    message: Any = UNSET
    toolCalls: list[TypedToolCall] | Unset = UNSET


class TypedTurn(msgspec.Struct, **TYPED):
    turnId: TypedId
    turnNumber: TypedCount
    timestamp: TypedEpochMs
    trigger: Any
    llmCalls: list[TypedLlmCall] | Unset = UNSET
    agentResponse: TypedAgentResponse | None | Unset = UNSET
    userFeedback: Any = UNSET


class TypedFinalOutcome(msgspec.Struct, **TYPED):
    status: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    result: Any = UNSET
    userSatisfaction: Annotated[float, msgspec.Meta(ge=1, le=5)] | None | Unset = UNSET
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)] | None | Unset = UNSET


class TypedSession(msgspec.Struct, **TYPED):
    sessionId: uuid.UUID
    agentName: TypedId
    initialRequest: str
    startTime: TypedEpochMs
    userId: Annotated[str, msgspec.Meta(max_length=255)] | None | Unset = UNSET
    endTime: TypedEpochMs | None | Unset = UNSET
    metadata: dict[str, Any] | None | Unset = UNSET
    tags: list[Annotated[str, msgspec.Meta(max_length=255)]] | None | Unset = UNSET
    parentSessionId: uuid.UUID | None | Unset = UNSET
    turns: list[TypedTurn] | Unset = UNSET
    finalOutcome: TypedFinalOutcome | None | Unset = UNSET


class TypedEnvelope(msgspec.Struct, frozen=True):
    sessions: list[TypedSession]
    timestamp: float | None = None


TYPED_PAIRS = {TypedSession: Session, TypedTurn: Turn, TypedLlmCall: LlmCall, TypedLlmMetrics: LlmMetrics,
               TypedAgentResponse: AgentResponse, TypedToolCall: ToolCall, TypedFinalOutcome: FinalOutcome}
_TYPED_DECODER = msgspec.json.Decoder(TypedEnvelope)


def decode_typed(body: bytes) -> list[Session] | None:
    """Every session of the envelope as SESSION_ADAPTER would return it (fields absent stay
    absent, ids are UUIDs), or None unless the whole batch fits the wire exactly. The caller
    has already ruled out NUL escapes and very long numbers (the exact parser's cases)."""
    try:
        envelope = _TYPED_DECODER.decode(body)
    except msgspec.DecodeError:  # ValidationError included
        return None
    sessions = msgspec.to_builtins(envelope.sessions)  # UNSET fields are left out
    for plain, typed in zip(sessions, envelope.sessions, strict=True):
        plain["sessionId"] = typed.sessionId
        if isinstance(typed.parentSessionId, uuid.UUID):
            plain["parentSessionId"] = typed.parentSessionId
    return sessions


_DECLARED: dict[type, frozenset[str]] = {}


def extras(obj: dict[str, Any], typed: type) -> dict[str, Any] | None:
    """The fields of ``obj`` its wire type does not declare (None when there are none)."""
    declared = _DECLARED.get(typed)
    if declared is None:
        declared = _DECLARED[typed] = frozenset(typed.__annotations__)
    unknown = obj.keys() - declared
    return {k: obj[k] for k in unknown} if unknown else None


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    # What kind of fault, for counting rejections by reason (not sent to clients).
    reason: str = "schema"


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


class Inexact:
    """A JSON number the exact parser kept aside: an integer beyond 64 bits or a float
    beyond a double's range, which no column could store without changing it."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def exact_int(literal: str) -> int | Inexact:
    value = int(literal)
    return value if -(2**63) <= value < 2**64 else Inexact(literal)


def exact_float(literal: str) -> float | Inexact:
    value = float(literal)
    return value if math.isfinite(value) else Inexact(literal)


def bad_values(value: Any, path: str = "") -> list[FieldError]:
    """What PostgreSQL cannot store as sent: NUL characters and invalid UTF-8 (lone
    surrogates) in strings and field names, and numbers the exact parser set aside."""
    found: list[FieldError] = []
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                found.append(FieldError(where, "text contains a NUL character", "text"))
            else:
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    found.append(FieldError(where, "text is not valid UTF-8", "text"))
        elif isinstance(item, Inexact):
            found.append(FieldError(where, f"number {item.literal[:40]} cannot be stored exactly "
                                           "(integers must fit in 64 bits, other numbers in a double)", "number"))
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and bad_values(key):
                    found.append(FieldError(child_path, "field name is not valid text", "text"))
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    found.sort(key=lambda e: e.field)
    return found


def too_deep(value: Any, limit: int, path: str = "") -> str | None:
    """The path of the first value nested deeper than ``limit`` levels, or None."""
    stack = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > limit:
            return where
        if isinstance(item, dict):
            stack.extend((child, f"{where}.{key}" if where else str(key), depth + 1) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
    return None


@dataclass(frozen=True)
class SessionLimits:
    """What one session may hold (settings), and the window its times must fall in (per request)."""

    max_turns: int = 500
    max_llm_calls: int = 2000
    max_tool_calls: int = 5000
    max_tags: int = 64
    earliest_ms: float = 0
    latest_ms: float = MAX_EPOCH_MS


def _sizes(raw: dict[str, Any], limits: SessionLimits) -> list[FieldError]:
    """Structural limits, checked on the raw session before anything walks it: a session of
    200,000 empty turns is refused by one comparison, not by 200,000 validation errors."""
    errors: list[FieldError] = []
    turns = raw.get("turns")
    if isinstance(turns, list):
        if len(turns) > limits.max_turns:
            return [FieldError("turns", f"at most {limits.max_turns} turns per session (got {len(turns)})", "limit")]
        llm_calls = tool_calls = 0
        for turn in turns:
            if not isinstance(turn, dict):
                continue
            calls = turn.get("llmCalls")
            llm_calls += len(calls) if isinstance(calls, list) else 0
            response = turn.get("agentResponse")
            tools = response.get("toolCalls") if isinstance(response, dict) else None
            tool_calls += len(tools) if isinstance(tools, list) else 0
        if llm_calls > limits.max_llm_calls:
            errors.append(FieldError("turns", f"at most {limits.max_llm_calls} LLM calls per session (got {llm_calls})",
                                     "limit"))
        if tool_calls > limits.max_tool_calls:
            errors.append(FieldError("turns", f"at most {limits.max_tool_calls} tool calls per session "
                                              f"(got {tool_calls})", "limit"))
    tags = raw.get("tags")
    if isinstance(tags, list) and len(tags) > limits.max_tags:
        errors.append(FieldError("tags", f"at most {limits.max_tags} tags per session (got {len(tags)})", "limit"))
    return errors


def _consistency_errors(session: Session, limits: SessionLimits) -> list[FieldError]:
    """Cross-field rules: times in order and within the accepted window, ids unique within the session."""
    errors: list[FieldError] = []

    def check_time(path: str, value: float | None) -> None:
        if value is not None and not limits.earliest_ms <= value <= limits.latest_ms:
            errors.append(FieldError(path, f"time {value:.0f} (epoch ms) is outside the accepted window "
                                           f"{limits.earliest_ms:.0f}..{limits.latest_ms:.0f}", "time_window"))

    def check_span(path: str, item: dict) -> None:
        end = item.get("endTime")
        if end is not None and end < item["startTime"]:
            errors.append(FieldError(f"{path}endTime", "endTime is before startTime", "consistency"))
        check_time(f"{path}startTime", item["startTime"])
        check_time(f"{path}endTime", end)

    def check_unique(seen: set[str], value: str, path: str, what: str) -> None:
        if value in seen:
            errors.append(FieldError(path, f"duplicate {what} {value!r} within the session", "consistency"))
        seen.add(value)

    check_span("", session)
    turn_ids: set[str] = set()
    call_ids: set[str] = set()
    tool_ids: set[str] = set()
    for t, turn in enumerate(session.get("turns", ())):
        check_unique(turn_ids, turn["turnId"], f"turns[{t}].turnId", "turnId")
        check_time(f"turns[{t}].timestamp", turn["timestamp"])
        for c, call in enumerate(turn.get("llmCalls", ())):
            path = f"turns[{t}].llmCalls[{c}]."
            check_unique(call_ids, call["callId"], path + "callId", "callId")
            check_span(path, call)
        for c, tool in enumerate((turn.get("agentResponse") or {}).get("toolCalls", ())):
            path = f"turns[{t}].agentResponse.toolCalls[{c}]."
            check_unique(tool_ids, tool["toolId"], path + "toolId", "toolId")
            check_span(path, tool)
    return errors


def validate_session(raw: Any, *, check_values: bool, limits: SessionLimits = SessionLimits(),
                     typed: bool = False) -> tuple[Session | None, list[FieldError]]:
    """A valid Session (a dict; ids parsed to UUIDs) and no errors, or None and every fault found.

    ``check_values`` walks every value for text PostgreSQL cannot store and inexact numbers;
    the caller skips it when the raw body proves neither can occur (the common, fast case).
    ``typed``: ``raw`` came from decode_typed, whose types and ranges are the adapter's; only
    the limits and the cross-field rules are left to check.
    """
    if not isinstance(raw, dict):
        return None, [FieldError("", "a session must be a JSON object")]
    errors = _sizes(raw, limits)
    if errors:
        return None, errors
    errors = bad_values(raw) if check_values else []
    try:
        session = raw if typed else SESSION_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        return None, errors + _pydantic_errors(exc)
    errors += _consistency_errors(session, limits)
    return (None, errors) if errors else (session, [])


def raw_session_id(raw: Any) -> Any:
    """The sessionId as sent, for the rejection report (may be anything, or absent)."""
    if isinstance(raw, dict):
        value = raw.get("sessionId")
        if isinstance(value, uuid.UUID):  # a session decode_typed read
            return str(value)
        if value is None or isinstance(value, (str, int, float, bool)):
            return value if not isinstance(value, str) or not bad_values(value) else None
    return None
