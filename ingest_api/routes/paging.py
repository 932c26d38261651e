"""Query checks shared by the list endpoints: time bounds with a zone, keyset cursors."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import HTTPException

from ingest_api.store.sessions import decode_cursor


def require_zones(since: datetime | None, until: datetime | None) -> None:
    """422 unless both bounds (when given) carry a time zone."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name} needs a time zone, e.g. 2026-11-25T10:00:00Z")


def cursor_position(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    try:
        return decode_cursor(cursor) if cursor else None
    except ValueError:
        raise HTTPException(422, "invalid cursor") from None
