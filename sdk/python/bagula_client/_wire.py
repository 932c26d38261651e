"""Sessions to bytes, one at a time, in the sender thread: the redaction hook, then JSON.

A session that cannot be encoded raises here on its own, so the sender drops that one
session and never the batch around it.
"""

from __future__ import annotations

import gzip
import json
import math
from typing import Any, Callable, Dict, List, Optional

Redactor = Callable[[Any, str], Any]

# The fields a redaction hook is called on: the free text and payloads of a session.
# Ids, names, times, numbers, userId and tags are left alone (they are the application's own).
SESSION_FIELDS = ("initialRequest", "metadata")
TURN_FIELDS = ("trigger", "userFeedback")
LLM_FIELDS = ("messages", "response")
RESPONSE_FIELDS = ("message",)
TOOL_FIELDS = ("arguments", "result", "error")
OUTCOME_FIELDS = ("result",)
CIRCULAR = "[Circular]"


class EncodeError(Exception):
    """The session cannot be sent (its encoding or its redaction failed)."""


def _redact_fields(record: Dict[str, Any], fields: tuple, redact: Redactor) -> Dict[str, Any]:
    copy = dict(record)
    for field in fields:
        value = copy.get(field)
        if value is not None:
            copy[field] = redact(value, field)
    return copy


def redacted(session: Dict[str, Any], redact: Redactor) -> Dict[str, Any]:
    """A copy of the session with ``redact(value, field)`` applied to every field it covers.
    The agent's own objects are never modified."""
    out = _redact_fields(session, SESSION_FIELDS, redact)
    turns = []
    for turn in session.get("turns") or ():
        turn = _redact_fields(turn, TURN_FIELDS, redact)
        turn["llmCalls"] = [_redact_fields(c, LLM_FIELDS, redact) for c in turn.get("llmCalls") or ()]
        response = turn.get("agentResponse")
        if response:
            response = _redact_fields(response, RESPONSE_FIELDS, redact)
            response["toolCalls"] = [_redact_fields(t, TOOL_FIELDS, redact) for t in response.get("toolCalls") or ()]
            turn["agentResponse"] = response
        turns.append(turn)
    out["turns"] = turns
    if out.get("finalOutcome"):
        out["finalOutcome"] = _redact_fields(out["finalOutcome"], OUTCOME_FIELDS, redact)
    return out


def _default(value: Any) -> Any:
    """Values JSON has no type for: numbers by their value (numpy's included), sets as lists,
    anything else as its text."""
    if hasattr(value, "__index__"):
        return int(value.__index__())
    if hasattr(value, "__float__"):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


def _key(key: Any) -> str:
    """A dict key as json.dumps would write it, or its text when json.dumps would refuse it."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return str(key)


def plain_json(value: Any, _path: Optional[set] = None) -> Any:
    """The slow path, taken only when json.dumps refuses a session: non-finite numbers become
    null, keys of any type become text, a container inside itself becomes "[Circular]"."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, (dict, list, tuple)):
        path = _path if _path is not None else set()
        if id(value) in path:
            return CIRCULAR
        path.add(id(value))
        try:
            if isinstance(value, dict):
                return {_key(k): plain_json(v, path) for k, v in value.items()}
            return [plain_json(v, path) for v in value]
        finally:
            path.discard(id(value))
    return plain_json(_default(value), _path)


def encode_session(session: Dict[str, Any], redact: Optional[Redactor] = None) -> bytes:
    """One session as compact ASCII JSON; raises EncodeError when it cannot be sent."""
    if redact is not None:
        try:
            session = redacted(session, redact)
        except Exception as exc:  # noqa: BLE001 - never send what the hook could not redact
            raise EncodeError(f"the redaction hook failed: {type(exc).__name__}: {exc}") from exc
    try:
        try:
            text = json.dumps(session, default=_default, allow_nan=False, separators=(",", ":"))
        except (ValueError, TypeError, RecursionError):
            text = json.dumps(plain_json(session), default=_default, allow_nan=False, separators=(",", ":"))
    except Exception as exc:  # noqa: BLE001
        raise EncodeError(f"{type(exc).__name__}: {exc}") from exc
    return text.encode("ascii")


def encode_batch(encoded_sessions: List[bytes], timestamp_ms: int) -> bytes:
    body = b'{"sessions":[' + b",".join(encoded_sessions) + b'],"timestamp":%d}' % timestamp_ms
    return gzip.compress(body, compresslevel=6)
