"""Session search: sessions whose words match a query, ranked, within one project.

It reads ``marts.session_search`` (dbt, incremental by the ingest watermark, off the ingest
path): a weighted tsvector per session (A request and user messages, B responses and
answers, C tool calls, D prompts, metadata, tags, user, agent) with a GIN index, and the
session's identifier-like words with a trigram index where pg_trgm exists. A session is
searchable once a build has indexed it (the platform builds after every batch).

A session matches when its document matches ``websearch_to_tsquery('english', q)`` (words,
"quoted phrases", ``or``, ``-word``), when ``q`` is its id, or, for a single token with a
digit (an order number, a code), when one of its identifiers contains ``q``. Ranking:
``ts_rank_cd`` (normalised to [0, 1)), plus 1 for an identifier match, plus 2 for the id.

Ranking reads each match's document, so it is bounded: the matches are taken newest first
in windows of ``RANK_WINDOW`` and each window is ranked. Up to ``RANK_WINDOW`` matches (most
searches for a phrase or an identifier) that is a plain ranking of all of them; beyond, the
first page ranks the newest ``RANK_WINDOW`` and the pages go on through older windows. The
keyset cursor carries the window and the position in it. Without ``q``: newest first.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

from ingest_api.paging import invalid

RANK_WINDOW = 1000
MAX_QUERY_CHARS = 500
# Windows a page may cross: a page is at most 500 items, a window 1,000 matches.
MAX_WINDOWS_PER_PAGE = 3
# The document's weights, by the part of the session they stand for (matchedIn).
PARTS = {"request": "a", "responses": "b", "toolCalls": "c", "prompts": "d"}
IDENTIFIER = re.compile(r"^\S{3,}$")
# How each way of matching takes its newest matches. Statements run with custom plans
# (prepare=False): a generic plan cannot know how common the words are, and took a bitmap of
# every match of a common word (0.4 s at a million sessions) where walking the time index stops
# after the window's matches (30 ms). The planner cannot estimate an identifier pattern's
# matches either: walking the time index for a pattern few sessions have read every session
# (8 s); an order the index cannot give makes it take the matches from the trigram index, then
# sort them.
ORDER_BY_INDEX = "s.started_at desc, s.session_id desc"
ORDER_AFTER_MATCHING = "s.started_at + interval '0' desc, s.session_id desc"


class MartsMissing(Exception):
    """The search index has not been built yet (`bagula transform`)."""


@dataclass
class SearchFilter:
    q: str | None = None
    agent_name: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None
    user_id: str | None = None
    cursor: str | None = None
    limit: int = 50

    def signature(self) -> str:
        """What a cursor is bound to: the same search, filters included."""
        fields = [
            self.q,
            self.agent_name,
            self.since and self.since.isoformat(),
            self.until and self.until.isoformat(),
            self.status,
            self.user_id,
        ]
        return hashlib.sha256(orjson.dumps(fields)).hexdigest()[:16]


@dataclass
class Position:
    """Where the next page starts: below ``window`` (the oldest match of the windows already
    ranked, None for the first) and, within that window, after ``after`` (rank, start, id)."""

    window: tuple[datetime, uuid.UUID] | None = None
    after: tuple[Decimal | None, datetime, uuid.UUID] | None = None


def _encode(f: SearchFilter, position: Position) -> str:
    window = [position.window[0].isoformat(), str(position.window[1])] if position.window else None
    after = None
    if position.after:
        rank, at, item = position.after
        after = [None if rank is None else str(rank), at.isoformat(), str(item)]
    raw = orjson.dumps([f.signature(), window, after])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(f: SearchFilter) -> Position:
    if not f.cursor:
        return Position()
    try:
        raw = base64.urlsafe_b64decode(f.cursor + "=" * (-len(f.cursor) % 4))
        signature, window, after = orjson.loads(raw)
        position = Position(
            (datetime.fromisoformat(window[0]), uuid.UUID(window[1])) if window else None,
            ((None if after[0] is None else Decimal(after[0])), datetime.fromisoformat(after[1]), uuid.UUID(after[2]))
            if after
            else None,
        )
    except Exception:  # noqa: BLE001 - any malformation is the same client error
        raise invalid("cursor", "not a cursor this API issued") from None
    if signature != f.signature():
        raise invalid("cursor", "the cursor belongs to another search: pass the same q and filters")
    return position


def _like_pattern(token: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", token.lower()) + "%"


async def _query_plan(conn: psycopg.AsyncConnection, q: str) -> dict[str, Any]:
    """What the query can match on: words, an id, an identifier (when trigram-indexed)."""
    cur = await conn.execute(
        """
        select numnode(websearch_to_tsquery('english', %s)) > 0,
               exists (
                   select 1 from pg_index i
                   where i.indrelid = to_regclass('marts.session_search')
                     and pg_get_indexdef(i.indexrelid) like '%%gin_trgm_ops%%'),
               to_regclass('marts.session_search') is not null
        """,
        (q,),
    )
    has_words, trigram, exists = await cur.fetchone()
    if not exists:
        raise MartsMissing()
    try:
        session_id = uuid.UUID(q.strip())
    except ValueError:
        session_id = None
    token = q.strip()
    identifier = trigram and IDENTIFIER.match(token) is not None and any(c.isdigit() for c in token)
    return {"words": has_words, "session_id": session_id, "pattern": _like_pattern(token) if identifier else None}


def _filters(f: SearchFilter, params: dict[str, Any], alias: str = "s") -> list[str]:
    conditions = [f"{alias}.project_id = %(project)s"]
    for name, column, value in (
        ("agent", "agent_name", f.agent_name),
        ("status", "status", f.status),
        ("user", "user_id", f.user_id),
    ):
        if value is not None:
            conditions.append(f"{alias}.{column} = %({name})s")
            params[name] = value
    if f.since is not None:
        conditions.append(f"{alias}.started_at >= %(since)s")
        params["since"] = f.since
    if f.until is not None:
        conditions.append(f"{alias}.started_at < %(until)s")
        params["until"] = f.until
    return conditions


# A page's sessions, summarised as GET /v1/agents/{name}/sessions does (from fct_sessions).
SUMMARY = """
    f.agent_name, f.user_id, f.parent_session_id, f.ended_at, f.status, f.user_satisfaction,
    f.confidence, page.tags, f.turn_count, f.llm_call_count, f.tokens_total, f.total_cost_usd,
    f.tool_call_count, f.tool_error_count
"""
SUMMARY_JOINS = """
    join marts.fct_sessions f on f.project_id = %(project)s and f.session_id = page.session_id
"""


async def _newest(
    conn: psycopg.AsyncConnection, project_id: uuid.UUID, f: SearchFilter, position: Position
) -> tuple[list[dict], str | None]:
    params: dict[str, Any] = {"project": project_id, "limit": f.limit + 1}
    conditions = _filters(f, params)
    if position.after is not None:
        conditions.append("(s.started_at, s.session_id) < (%(after_time)s, %(after_id)s)")
        _, params["after_time"], params["after_id"] = position.after
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            with page as (
                select s.session_id, s.started_at, s.tags from marts.session_search s
                where {" and ".join(conditions)}
                order by s.started_at desc, s.session_id desc
                limit %(limit)s
            )
            select page.session_id, page.started_at, null::numeric as rank, {SUMMARY},
                   false as a, false as b, false as c, false as d
            from page {SUMMARY_JOINS}
            order by page.started_at desc, page.session_id desc
            """,
            params,
        )
        rows = await cur.fetchall()
    next_cursor = None
    if len(rows) > f.limit:
        rows = rows[: f.limit]
        next_cursor = _encode(f, Position(after=(None, rows[-1]["started_at"], rows[-1]["session_id"])))
    return [_item(row, ranked=False) for row in rows], next_cursor


async def _window_page(
    conn: psycopg.AsyncConnection, project_id: uuid.UUID, f: SearchFilter, plan: dict, position: Position, count: int
) -> tuple[list[dict], int, tuple[datetime, uuid.UUID] | None]:
    """Up to ``count`` matches of one window after the position; the window's size and its oldest match."""
    params: dict[str, Any] = {"project": project_id, "q": f.q, "window": RANK_WINDOW, "count": count}
    conditions = _filters(f, params)
    if position.window is not None:
        conditions.append("(s.started_at, s.session_id) < (%(window_time)s, %(window_id)s)")
        params["window_time"], params["window_id"] = position.window
    # Each way of matching takes its own newest matches, with the plan that suits it; the
    # newest of their union are exactly the newest sessions that match any of them.
    matches = []
    if plan["words"]:
        matches.append(("s.document @@ websearch_to_tsquery('english', %(q)s)", ORDER_BY_INDEX))
    if plan["session_id"] is not None:
        matches.append(("s.session_id = %(session_id)s", ORDER_BY_INDEX))
        params["session_id"] = plan["session_id"]
    if plan["pattern"] is not None:
        matches.append(("s.identifiers ilike %(pattern)s", ORDER_AFTER_MATCHING))
        params["pattern"] = plan["pattern"]
    where = " and ".join(conditions)
    window = " union ".join(
        f"(select s.session_id, s.started_at from marts.session_search s where {where} and {match}"
        f" order by {order} limit %(window)s)"
        for match, order in matches
    )
    after = ""
    if position.after is not None:
        after = (
            "where (scored.rank, scored.started_at, scored.session_id) < (%(after_rank)s, %(after_time)s, %(after_id)s)"
        )
        params["after_rank"], params["after_time"], params["after_id"] = position.after
    words = "websearch_to_tsquery('english', %(q)s)"
    rank = [f"ts_rank_cd(s.document, {words}, 32)" if plan["words"] else "0"]
    if plan["pattern"] is not None:
        rank.append("case when s.identifiers ilike %(pattern)s then 1 else 0 end")
    if plan["session_id"] is not None:
        rank.append("case when s.session_id = %(session_id)s then 2 else 0 end")
    # Where the words are: for the page's sessions only (each filter makes a new tsvector).
    parts = ", ".join(
        (f"ts_filter(d.document, '{{{weight}}}') @@ {words}" if plan["words"] else "false") + f" as {weight}"
        for weight in PARTS.values()
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            with window_matches as materialized (
                -- the window: the newest matches below its bound (only ids: no document read yet
                -- beyond what matching needs)
                select m.session_id, m.started_at from ({window}) m
                order by m.started_at desc, m.session_id desc
                limit %(window)s
            ),
            scored as (
                select w.session_id, w.started_at, s.tags, round(({" + ".join(rank)})::numeric, 6) as rank
                from window_matches w
                join marts.session_search s on s.project_id = %(project)s and s.session_id = w.session_id
            ),
            page as (
                select * from scored {after}
                order by rank desc, started_at desc, session_id desc
                limit %(count)s
            )
            select page.session_id, page.started_at, page.rank, {parts}, {SUMMARY},
                   (select count(*) from window_matches) as window_size,
                   oldest.started_at as oldest_at, oldest.session_id as oldest_id
            from page
            join marts.session_search d on d.project_id = %(project)s and d.session_id = page.session_id
            cross join lateral (
                select started_at, session_id from window_matches order by started_at, session_id limit 1
            ) oldest
            {SUMMARY_JOINS}
            order by page.rank desc, page.started_at desc, page.session_id desc
            """,
            params,
            prepare=False,
        )
        rows = await cur.fetchall()
        if rows:
            return rows, rows[0]["window_size"], (rows[0]["oldest_at"], rows[0]["oldest_id"])
        # Nothing after the position in this window: is there a window at all, and where does it end?
        await cur.execute(
            f"""
            with window_matches as materialized (
                select m.session_id, m.started_at from ({window}) m
                order by m.started_at desc, m.session_id desc
                limit %(window)s
            )
            select count(*) as window_size,
                   (select started_at from window_matches order by started_at, session_id limit 1) as oldest_at,
                   (select session_id from window_matches order by started_at, session_id limit 1) as oldest_id
            from window_matches
            """,
            params,
            prepare=False,
        )
        size = await cur.fetchone()
    oldest = (size["oldest_at"], size["oldest_id"]) if size["window_size"] else None
    return [], size["window_size"], oldest


async def search(
    conn: psycopg.AsyncConnection, project_id: uuid.UUID, f: SearchFilter
) -> tuple[list[dict], str | None]:
    """A page of the project's sessions matching ``f`` (ranked; newest first without q), and
    the cursor of the next page."""
    position = _decode(f)
    try:
        if f.q is None:
            return await _newest(conn, project_id, f, position)
        plan = await _query_plan(conn, f.q)
        if not (plan["words"] or plan["session_id"] or plan["pattern"]):
            return [], None  # only stop words: nothing to look for
        items: list[dict] = []
        for _ in range(MAX_WINDOWS_PER_PAGE):
            need = f.limit - len(items)
            rows, window_size, oldest = await _window_page(conn, project_id, f, plan, position, need + 1)
            if len(rows) > need:
                items += rows[:need]
                last = items[-1]
                return [_item(r) for r in items], _encode(
                    f, Position(position.window, (last["rank"], last["started_at"], last["session_id"]))
                )
            items += rows
            if window_size < RANK_WINDOW or oldest is None:
                return [_item(r) for r in items], None  # the last window: no older matches
            position = Position(oldest)  # the next window starts below this one's oldest match
            if len(items) == f.limit:
                break
        return [_item(r) for r in items], _encode(f, position)
    except psycopg.errors.UndefinedTable:
        raise MartsMissing() from None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _item(row: dict, ranked: bool = True) -> dict:
    return {
        "session_id": str(row["session_id"]),
        "agent_name": row["agent_name"],
        "user_id": row["user_id"],
        "parent_session_id": str(row["parent_session_id"]) if row["parent_session_id"] else None,
        "start_time": row["started_at"],
        "end_time": row["ended_at"],
        "status": row["status"],
        "user_satisfaction": _number(row["user_satisfaction"]),
        "confidence": _number(row["confidence"]),
        "tags": row["tags"],
        "turn_count": row["turn_count"],
        "llm_call_count": row["llm_call_count"],
        "tokens_total": row["tokens_total"],
        "total_cost_usd": float(row["total_cost_usd"]),
        "tool_call_count": row["tool_call_count"],
        "tool_error_count": row["tool_error_count"],
        "rank": _number(row["rank"]) if ranked else None,
        "matched_in": [part for part, weight in PARTS.items() if row[weight]],
    }
