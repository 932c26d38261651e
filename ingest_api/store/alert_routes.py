"""Where a project's incident alerts go: its own webhook and minimum severity (``alert_routes``),
else the platform's default (BAGULA_ALERT_WEBHOOK_URL, BAGULA_ALERT_MIN_SEVERITY). Set from
the API (async) and from `bagula alerts route` (sync): the same statements."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row

SET = [
    """insert into alert_routes (project_id, webhook_url, min_severity) values (%(project)s, %(url)s, %(minimum)s)
       on conflict (project_id) do update set webhook_url = excluded.webhook_url,
           min_severity = excluded.min_severity, updated_at = now()""",
    # Alerts still waiting go to the new webhook; a pause was the old one's.
    """update alerts set destination = %(project)s::text where project_id = %(project)s and status <> 'delivered'""",
    """delete from alert_delivery where destination = %(project)s::text""",
]
REMOVE = [
    """delete from alert_routes where project_id = %(project)s""",
    """update alerts set destination = 'default' where project_id = %(project)s and status <> 'delivered'""",
    """delete from alert_delivery where destination = %(project)s::text""",
]
GET = "select webhook_url, min_severity, updated_at from alert_routes where project_id = %(project)s"


def shown(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """The route as shown: the webhook's scheme and host only (its path is the secret)."""
    if row is None:
        return None
    parts = urlsplit(row["webhook_url"])
    return {"webhook": f"{parts.scheme}://{parts.hostname}/…", "min_severity": row["min_severity"],
            "updated_at": row["updated_at"]}


def set_route(conn: psycopg.Connection, project_id: uuid.UUID, webhook_url: str, min_severity: str) -> None:
    with conn.transaction():
        for statement in SET:
            conn.execute(statement, {"project": project_id, "url": webhook_url, "minimum": min_severity})


def remove_route(conn: psycopg.Connection, project_id: uuid.UUID) -> bool:
    with conn.transaction():
        removed = conn.execute(REMOVE[0], {"project": project_id}).rowcount
        for statement in REMOVE[1:]:
            conn.execute(statement, {"project": project_id})
    return bool(removed)


async def get_route_async(conn: psycopg.AsyncConnection, project_id: uuid.UUID) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(GET, {"project": project_id})
        return shown(await cur.fetchone())


async def set_route_async(conn: psycopg.AsyncConnection, project_id: uuid.UUID, webhook_url: str,
                          min_severity: str) -> dict[str, Any]:
    async with conn.transaction():
        for statement in SET:
            await conn.execute(statement, {"project": project_id, "url": webhook_url, "minimum": min_severity})
    return await get_route_async(conn, project_id)


async def remove_route_async(conn: psycopg.AsyncConnection, project_id: uuid.UUID) -> bool:
    async with conn.transaction():
        removed = (await conn.execute(REMOVE[0], {"project": project_id})).rowcount
        for statement in REMOVE[1:]:
            await conn.execute(statement, {"project": project_id})
    return bool(removed)
