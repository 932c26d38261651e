"""Erasure (the right to be forgotten): one session, every session of a user, or an agent's
sessions in a time range, from every table the platform keeps (docs/privacy.md)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import Field, model_validator

from ingest_api.deps import AdminKey, ConnectionDep
from ingest_api.paging import INSTANT, instant, invalid
from ingest_api.schemas import ApiModel, EpochMs
from ingest_api.store import erasure as store

router = APIRouter(tags=["privacy"])

# While a build of the marts holds the pipeline lock past the erasure's wait.
RETRY_AFTER_S = 10


class ErasureReceipt(ApiModel):
    erasure_id: str
    sessions: int = Field(description="sessions erased now (0 when they were erased before or never stored)")
    rows_deleted: dict[str, int] = Field(description="rows deleted (or updated) per table")
    requested_at: EpochMs
    criteria: dict[str, Any] = Field(description="what was asked, without content: a userId as its SHA-256")
    requested_by: str = Field(description="key:<API key id> or cli:<operating-system user>")


class ErasureList(ApiModel):
    erasures: list[ErasureReceipt]


class ErasureRequest(ApiModel):
    user_id: str | None = Field(
        default=None, min_length=1, max_length=255, description="erase every session of this userId"
    )
    agent_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="with since and until: erase the agent's sessions started in the range",
    )
    since: str | int | float | None = Field(default=None, description=f"range start: {INSTANT}")
    until: str | int | float | None = Field(default=None, description=f"range end, exclusive: {INSTANT}")

    @model_validator(mode="after")
    def one_kind(self) -> "ErasureRequest":
        if "\x00" in (self.user_id or "") + (self.agent_name or ""):
            raise ValueError("userId and agentName must not contain NUL characters")
        by_user = self.user_id is not None
        by_range = any(v is not None for v in (self.agent_name, self.since, self.until))
        if by_user == by_range:
            raise ValueError("give either userId, or agentName with since and until")
        if by_range and None in (self.agent_name, self.since, self.until):
            raise ValueError("an erasure by time range needs agentName, since and until")
        return self


async def _erase(conn, principal, criteria: store.Criteria) -> dict:
    try:
        done = await store.erase(conn, principal.project_id, criteria, f"key:{principal.key_id}")
    except store.Busy:
        raise HTTPException(
            503,
            "a build of the marts holds the pipeline; nothing was erased: retry",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    return done.as_dict()


@router.delete(
    "/v1/sessions/{session_id}",
    response_model=ErasureReceipt,
    summary="Erase one session from every table (raw, marts, verdicts, alerts, search)",
    description="Idempotent: erasing it again erases nothing and says so (sessions: 0). The session "
    "sent again afterwards is counted as a duplicate and not stored (its id stays as a "
    "tombstone). Each call leaves an audit row, GET /v1/erasures.",
)
async def erase_session(session_id: uuid.UUID, principal: AdminKey, conn: ConnectionDep) -> dict:
    return await _erase(conn, principal, store.Criteria(session_id=session_id))


@router.post(
    "/v1/erasures",
    response_model=ErasureReceipt,
    summary="Erase every session of a userId, or of an agent in a time range",
    description="As DELETE /v1/sessions/{id} for each session chosen: found in the raw tables and, past "
    "their retention, in the marts.",
)
async def create_erasure(body: ErasureRequest, principal: AdminKey, conn: ConnectionDep) -> dict:
    if body.user_id is not None:
        return await _erase(conn, principal, store.Criteria(user_id=body.user_id))
    since, until = instant(body.since, "since"), instant(body.until, "until")
    if until <= since:
        raise invalid("until", "must be after since")
    return await _erase(conn, principal, store.Criteria(agent_name=body.agent_name, since=since, until=until))


@router.get(
    "/v1/erasures", response_model=ErasureList, summary="The project's erasures (the audit trail), newest first"
)
async def list_erasures(
    principal: AdminKey, conn: ConnectionDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> dict:
    return {"erasures": [e.as_dict() for e in await store.list_erasures(conn, principal.project_id, limit)]}
