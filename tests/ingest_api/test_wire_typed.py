"""The ingest's fast path (msgspec structs) takes only what the pydantic path takes, and returns
the same sessions: whichever way a batch goes, the same rows are stored."""

from __future__ import annotations

import copy
import random
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from ingest_api import wire
from ingest_api.body import parse_envelope
from simulator.samples import make_session

SESSIONS = [make_session(random.Random(seed), turns=1 + seed % 4) for seed in range(6)]
for plain in SESSIONS[::2]:  # parents, tags, user ids and metadata as the SDK sends them
    plain.update(parentSessionId=SESSIONS[1]["sessionId"], tags=["billing", "é" * 255], userId="u-1",
                 metadata={"tier": "gold", "nested": {"n": [1, 2.5, None, True]}})

# What a field may be set to: each wire type, its bounds and just past them, and what no
# field takes (objects, lists, booleans).
ODD_VALUES = [None, True, 0, -1, 1, 5, 6, 1.5, -0.5, 2**31 - 1, 2**31, 2**63, 1e12, 1e12 + 1, 7_258_118_400_001,
              "", "x", "x" * 50, "x" * 51, "x" * 100, "x" * 101, "x" * 255, "x" * 256,
              "0f8fad5b-d9cb-469f-a165-70867728950e", "0f8fad5bd9cb469fa16570867728950e", "{0f8fad5b-d9cb-469f-a165-70867728950e}",
              [], ["a"], [1], {}, {"a": 1}]


# Fields whose values are the wire's own structure (walked into); every other value is free JSON.
STRUCTURE = {"turns", "llmCalls", "metrics", "agentResponse", "toolCalls", "finalOutcome", "tags"}


def paths(value, at=()):
    """(path to a container, key) for every field of the wire's structure and every list item in it."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield at, key
            if key in STRUCTURE:
                yield from paths(child, (*at, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield at, i
            yield from paths(child, (*at, i))


def container_at(session: dict, where: tuple):
    for step in where:
        session = session[step]
    return session


def judged_alike(sessions: list[dict]) -> None:
    """The property: the fast path declines a batch only when the slow one would refuse a
    session or keep a field the wire does not declare, and otherwise returns what pydantic does."""
    body = orjson.dumps({"sessions": sessions})
    typed = wire.decode_typed(body)
    sent = orjson.loads(body)["sessions"]
    if typed is None:
        assert any(refused_or_extra(raw) or uncommon_uuid(raw) for raw in sent), sessions
    else:
        assert typed == [wire.SESSION_ADAPTER.validate_python(raw) for raw in sent]


def mutated(session: dict, data) -> dict:
    session = copy.deepcopy(session)
    for _ in range(data.draw(st.integers(1, 3))):
        where, key = data.draw(st.sampled_from(sorted(paths(session), key=repr)))
        container = container_at(session, where)
        action = data.draw(st.sampled_from(["drop", "set", "unknown"]))
        if action == "drop" and isinstance(container, dict):
            del container[key]
        elif action == "unknown" and isinstance(container, dict):
            container["surprise"] = data.draw(st.sampled_from(ODD_VALUES))
        else:
            container[key] = data.draw(st.sampled_from(ODD_VALUES))
    return session


def uncommon_uuid(raw: dict) -> bool:
    """An id in a spelling pydantic reads and msgspec does not (braces, a URN): slow path only."""
    return any(isinstance(raw.get(key), str) and not re.fullmatch(r"[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}",
                                                                   raw[key]) for key in ("sessionId", "parentSessionId"))


def refused_or_extra(raw: dict) -> bool:
    try:
        checked = wire.SESSION_ADAPTER.validate_python(raw)
    except ValidationError:
        return True
    levels = [(checked, wire.Session), (checked.get("finalOutcome") or {}, wire.FinalOutcome)]
    for turn in checked.get("turns", []):
        levels.append((turn, wire.Turn))
        response = turn.get("agentResponse") or {}
        levels += [(response, wire.AgentResponse), *((tool, wire.ToolCall) for tool in response.get("toolCalls", []))]
        for call in turn.get("llmCalls", []):
            levels += [(call, wire.LlmCall), (call.get("metrics") or {}, wire.LlmMetrics)]
    return any(wire.extras(level, typed) is not None for level, typed in levels)


def test_the_structs_declare_exactly_the_fields_of_the_wire_types():
    for struct, typed_dict in wire.TYPED_PAIRS.items():
        fields = struct.__struct_fields__
        required = set(fields[: len(fields) - len(struct.__struct_defaults__)])
        assert set(fields) == set(typed_dict.__annotations__), struct.__name__
        assert required == set(TypeAdapter(typed_dict).json_schema().get("required", [])), struct.__name__


def test_a_batch_as_the_sdk_sends_it_takes_the_fast_path_and_equals_the_pydantic_result():
    body = orjson.dumps({"sessions": SESSIONS, "timestamp": 1_764_000_000_000})
    envelope = parse_envelope(body, 100)
    assert envelope.typed
    assert envelope.sessions == [wire.SESSION_ADAPTER.validate_python(s) for s in orjson.loads(body)["sessions"]]


def test_every_single_change_to_a_field_of_the_wire_is_judged_alike():
    """Exhaustive over one compact session: each field dropped, set to each odd value, and an
    unknown field beside it."""
    compact = copy.deepcopy(SESSIONS[0])
    compact["turns"] = compact["turns"][:1]
    turn = compact["turns"][0]
    turn["llmCalls"], turn["agentResponse"]["toolCalls"] = turn["llmCalls"][:1], turn["agentResponse"]["toolCalls"][:1]
    compact["finalOutcome"].update(userSatisfaction=4, confidence=0.5)
    turn["llmCalls"][0]["metrics"].update(costUsd=0.01, latencyMs=120.5)
    changes = 0
    for where, key in list(paths(compact)):
        for action in ["drop", "unknown", *range(len(ODD_VALUES))]:
            session = copy.deepcopy(compact)
            container = container_at(session, where)
            if action == "drop" and isinstance(container, dict):
                del container[key]
            elif action == "unknown" and isinstance(container, dict):
                container["surprise"] = 1
            elif isinstance(action, int):
                container[key] = ODD_VALUES[action]
            else:
                continue
            judged_alike([session])
            changes += 1
    assert changes > 1500


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_whatever_the_fast_path_takes_pydantic_takes_and_returns_alike(data):
    judged_alike([SESSIONS[0], mutated(data.draw(st.sampled_from(SESSIONS)), data)])


@pytest.mark.parametrize("body", [
    b'{"sessions": [{"sessionId": "not a uuid"}]}',
    b'{"sessions": "none"}',
    b'{"sessions": [], "timestamp": true}',
    b'[1, 2]',
    b'{"sessions": [' + orjson.dumps({**SESSIONS[0], "initialRequest": "\\ud800"}).replace(b"\\\\ud800", b"\\ud800") + b']}',
    b'{"sessions": [' + orjson.dumps({**SESSIONS[0], "metadata": {"big": 1}}).replace(b'"big":1', b'"big":1e400') + b']}',
    b'{"sessions": [' + orjson.dumps(SESSIONS[0]).replace(b'"initialRequest":"', b'"initialRequest":"\xff') + b']}',
])
def test_what_the_exact_parser_or_validation_must_see_is_left_to_them(body):
    assert wire.decode_typed(body) is None
