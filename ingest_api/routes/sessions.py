"""Reads on the raw data, always scoped to the caller's project."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from ingest_api.deps import ConnectionDep, ReadKey
from ingest_api.paging import INSTANT, decode_cursor, time_range
from ingest_api.schemas import Agents, SessionPage
from ingest_api.store import sessions as session_store

router = APIRouter(tags=["sessions"])


@router.get("/v1/agents", response_model=Agents,
            summary="The project's agents with session counts, first and last seen")
async def list_agents(principal: ReadKey, conn: ConnectionDep) -> dict:
    return {"agents": await session_store.list_agents(conn, principal.project_id)}


@router.get("/v1/agents/{agent_name}/sessions", response_model=SessionPage,
            summary="An agent's sessions, newest first, with keyset pagination")
async def list_sessions(
    agent_name: str,
    principal: ReadKey,
    conn: ConnectionDep,
    since: Annotated[str | None, Query(description=f"sessions started at or after: {INSTANT}")] = None,
    until: Annotated[str | None, Query(description=f"sessions started before: {INSTANT}")] = None,
    status: Annotated[str | None, Query(description="final outcome status, e.g. success")] = None,
    user_id: Annotated[str | None, Query(alias="userId")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page")] = None,
) -> dict:
    start, end = time_range(since, until)
    items, next_cursor = await session_store.list_sessions(
        conn, principal.project_id, agent_name,
        session_store.SessionFilter(start, end, status, user_id, decode_cursor(cursor), limit),
    )
    return {"sessions": items, "next_cursor": next_cursor}


@router.get("/v1/sessions/{session_id}", summary="One whole session as ingested (the wire format)",
            responses={200: {"description": "the session, as sent (unknown fields kept)",
                             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Session"}}}}})
async def get_session(session_id: uuid.UUID, principal: ReadKey, conn: ConnectionDep) -> dict:
    session = await session_store.get_session(conn, principal.project_id, session_id)
    if session is None:
        raise HTTPException(404, "session not found")
    return session
