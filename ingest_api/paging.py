"""Query and body parameters every list shares: times (epoch ms or ISO 8601 with a zone)
and keyset cursors (opaque to clients: the position after the last item of a page)."""

from __future__ import annotations

import base64
import math
import uuid
from datetime import datetime

import orjson

from ingest_api.wire import MAX_EPOCH_MS, from_epoch_ms

INSTANT = "epoch milliseconds, or ISO 8601 with a time zone (2026-11-25T10:00:00Z)"


class InvalidParameter(Exception):
    """A query, path or body parameter the API cannot use: answered 422 naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


invalid = InvalidParameter


def instant(value: str | int | float | None, field: str) -> datetime | None:
    """A point in time from a parameter: epoch milliseconds or ISO 8601 with a zone."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise invalid(field, f"expected {INSTANT}")
    number: float | None = None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is not None:
        if not math.isfinite(number) or not 0 <= number <= MAX_EPOCH_MS:
            raise invalid(field, "epoch milliseconds out of range")
        return from_epoch_ms(number)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise invalid(field, f"expected {INSTANT}") from None
    if moment.tzinfo is None:
        raise invalid(field, "needs a time zone, e.g. 2026-11-25T10:00:00Z")
    return moment


def time_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    start, end = instant(since, "since"), instant(until, "until")
    if start is not None and end is not None and end <= start:
        raise invalid("until", "must be after since")
    return start, end


def encode_cursor(at: datetime, item_id: uuid.UUID | str) -> str:
    raw = orjson.dumps([at.isoformat(), str(item_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The position a cursor this API issued stands for; 422 for anything else."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, item_id = orjson.loads(raw)
        return datetime.fromisoformat(at), uuid.UUID(item_id)
    except Exception:  # noqa: BLE001 - any malformation is the same client error
        raise invalid("cursor", "not a cursor this API issued") from None
