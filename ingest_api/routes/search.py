"""Session search across a project's agents: `GET /v1/sessions?q=...` (from the marts)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import Field

from ingest_api.deps import ConnectionDep, ReadKey
from ingest_api.paging import INSTANT, invalid, time_range
from ingest_api.schemas import NEXT_CURSOR, ApiModel, SessionSummary
from ingest_api.store import search as search_store

router = APIRouter(tags=["sessions"])

Part = Literal["request", "responses", "toolCalls", "prompts"]


class SessionHit(SessionSummary):
    rank: float | None = Field(
        description="relevance (higher first): ts_rank_cd of the words in [0, 1), "
        "+1 for a match inside an identifier, +2 for the session id; "
        "null without q"
    )
    matched_in: list[Part] = Field(
        description="where the words were found: request (the initial request, "
        "the user's messages and feedback), responses (LLM responses, the agent's "
        "answers, the result), toolCalls (names, arguments, results, "
        "errors), prompts (the prompts' messages, metadata, tags)"
    )


class SessionSearchPage(ApiModel):
    sessions: list[SessionHit]
    next_cursor: str | None = Field(description=NEXT_CURSOR)


DESCRIPTION = f"""Sessions of every agent of the project. With `q`: the sessions whose request,
messages, responses or tool calls contain the words, best match first. `q` is a web-search
style query: words (all of them must appear, in any form: `refunds` finds `refund`),
`"a quoted phrase"`, `or`, `-word`; a session id finds that session, and a single token with a
digit (`48213`, `ORD-48213`) also finds it inside identifiers (trigram matching, where the
database has pg_trgm). Ranking reads the matches' words, so it works on the newest
{search_store.RANK_WINDOW:,} matches at a time: beyond that many matches, the pages go on
through older ones, each {search_store.RANK_WINDOW:,} ranked in turn (narrow the search with
more words or filters to rank across all). Without `q`: newest first.

Searches what the marts hold: a session is found once a build has indexed it (the platform
builds after every batch). 503 until the marts have been built."""


@router.get(
    "/v1/sessions",
    response_model=SessionSearchPage,
    summary="Search the project's sessions by what was said in them (or list them, newest first)",
    description=DESCRIPTION,
)
async def search_sessions(
    principal: ReadKey,
    conn: ConnectionDep,
    q: Annotated[str | None, Query(description='words, "phrases", or, -word; a session id; an identifier')] = None,
    agent_name: Annotated[str | None, Query(alias="agentName", description="only this agent's sessions")] = None,
    since: Annotated[str | None, Query(description=f"sessions started at or after: {INSTANT}")] = None,
    until: Annotated[str | None, Query(description=f"sessions started before: {INSTANT}")] = None,
    status: Annotated[str | None, Query(description="final outcome status, e.g. failure")] = None,
    user_id: Annotated[str | None, Query(alias="userId")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page (same q and filters)")] = None,
) -> dict:
    start, end = time_range(since, until)
    if q is not None:
        q = q.strip()
        if not q:
            q = None
        elif len(q) > search_store.MAX_QUERY_CHARS:
            raise invalid("q", f"at most {search_store.MAX_QUERY_CHARS} characters")
        elif "\x00" in q:
            raise invalid("q", "must not contain NUL characters")
    f = search_store.SearchFilter(q, agent_name, start, end, status, user_id, cursor, limit)
    try:
        items, next_cursor = await search_store.search(conn, principal.project_id, f)
    except search_store.MartsMissing:
        raise HTTPException(503, "the marts have not been built yet: run `bagula transform`") from None
    return {"sessions": items, "next_cursor": next_cursor}
