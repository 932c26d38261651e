"""Server-side redaction: a project's chosen ready redactors, applied by the API to every
session (``POST /v1/sessions/ingest``) and every span (``POST /v1/traces``) before anything is
stored (docs/privacy.md).

The redactors and the fields they cover are the Python SDK's own (``bagula_client.redact``,
``bagula_client._wire.redacted``): what a project's setting removes on the server is exactly
what the same redactors remove in the client, pinned by ``sdk/testdata/redaction.json``. As in
the SDKs, ids, names, times, numbers, ``userId`` and tags are left alone; on spans, the
attributes Bagula reads as identifiers and figures (``otlp.conventions``: session keys, user
ids, agent, model and tool names, counts, costs) are left alone and every other attribute,
event attribute and status message is redacted.
"""

from __future__ import annotations

from typing import Any

import orjson

from bagula_client import redact
from bagula_client._wire import redacted
from ingest_api.otlp import conventions
from ingest_api.otlp.decode import SPAN_COLUMNS

REDACTORS: dict[str, redact.Redactor] = {
    "emails": redact.emails,
    "phone_numbers": redact.phone_numbers,
    "card_numbers": redact.card_numbers,
    "api_keys": redact.api_keys,
}
# All four in one walk, in the order that keeps one from eating another's match.
_ALL = frozenset(REDACTORS)

_COLUMN = {name.strip(): i for i, name in enumerate(SPAN_COLUMNS.split(","))}
_KEPT_ATTRIBUTES = conventions.STRINGS | conventions.COUNTS | conventions.NUMBERS


def redactor(names: tuple[str, ...] | list[str]) -> redact.Redactor | None:
    """The redactor for a project's setting (None: nothing to redact)."""
    if not names:
        return None
    if frozenset(names) == _ALL:
        return redact.pii
    return redact.compose(*(REDACTORS[n] for n in sorted(names)))


def redact_session(session: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """A redacted copy of a validated session (the wire format's camelCase dict)."""
    apply = redactor(names)
    return session if apply is None else redacted(session, apply)


def _attributes(attributes: dict[str, Any], apply: redact.Redactor) -> dict[str, Any]:
    return {k: v if k in _KEPT_ATTRIBUTES else apply(v, k) for k, v in attributes.items()}


def redact_span_rows(rows: list[tuple], names: tuple[str, ...]) -> list[tuple]:
    """Decoded ``otlp_spans`` rows (``decode.SPAN_COLUMNS`` order) with their content redacted."""
    apply = redactor(names)
    if apply is None:
        return rows
    attributes, events, message = _COLUMN["attributes"], _COLUMN["events"], _COLUMN["status_message"]
    out = []
    for row in rows:
        row = list(row)
        row[attributes] = orjson.dumps(_attributes(orjson.loads(row[attributes]), apply)).decode()
        if row[events] is not None:
            row[events] = orjson.dumps(
                [{**e, "attributes": _attributes(e.get("attributes") or {}, apply)} for e in orjson.loads(row[events])]
            ).decode()
        if row[message] is not None:
            row[message] = apply(row[message], "status.message")
        out.append(tuple(row))
    return out
