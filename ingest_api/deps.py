"""Request dependencies, as Annotated aliases: settings, pool, connection, caller."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Request
from psycopg_pool import AsyncConnectionPool

from ingest_api.access import Access, bearer_token, expired, scope_refusal, well_formed
from ingest_api.settings import ApiSettings
from ingest_api.store import keys
from ingest_api.store.keys import Principal


# These three are async although they do not wait: FastAPI runs a plain `def` dependency in a
# worker thread, three thread hand-offs per request for reading an attribute.
async def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


async def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]


async def get_connection(pool: PoolDep) -> AsyncIterator[psycopg.AsyncConnection]:
    async with pool.connection() as conn:
        yield conn


ConnectionDep = Annotated[psycopg.AsyncConnection, Depends(get_connection)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def get_access(request: Request) -> Access:
    return request.app.state.access


AccessDep = Annotated[Access, Depends(get_access)]


async def get_principal(request: Request, pool: PoolDep, access: AccessDep) -> Principal:
    """The API key's project, from the key cache or one indexed query on its own short-lived
    connection (reading a slow upload never holds a pooled connection); 429 past the key's rate."""
    secret = bearer_token(request.headers.get("authorization", ""))
    if secret is None or not well_formed(secret):  # RequestGuard refused these already
        raise _unauthorized("missing or malformed API key: send 'Authorization: Bearer <key>'")
    key_hash = keys.hash_key(secret)
    found, principal = access.cached(key_hash)
    if not found:
        async with pool.connection() as conn:
            principal = await keys.authenticate(conn, key_hash)
        access.remember(key_hash, principal)
    if principal is None:
        access.failed(request.client.host if request.client else "unknown")
        raise _unauthorized("unknown or revoked API key")
    if expired(principal):
        raise _unauthorized("this API key has expired")
    refusal = access.over_rate(principal)
    if refusal is not None:
        raise HTTPException(429, refusal.detail, headers={"Retry-After": str(refusal.retry_after_s)})
    if access.use_due(principal.key_id):
        _in_background(_mark_used(pool, principal))
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

_log = logging.getLogger("bagula.api")
_tasks: set[asyncio.Task] = set()


def _in_background(work) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _tasks.add(task)  # a reference until done, or the loop may drop it
    task.add_done_callback(_tasks.discard)


async def _mark_used(pool: AsyncConnectionPool, principal: Principal) -> None:
    """The key's last use, off the request's path (a lost mark costs nothing but precision)."""
    try:
        async with pool.connection() as conn:
            await keys.mark_used(conn, [principal.key_id])
    except Exception as exc:  # noqa: BLE001 - the request it belongs to is already served
        _log.warning("last use of key %s not recorded: %s", principal.key_id, exc)


def require(scope: str):
    """The dependency of an endpoint that needs ``scope``: the caller, or 403."""

    async def scoped(principal: PrincipalDep) -> Principal:
        refusal = scope_refusal(principal, scope)
        if refusal is not None:
            raise HTTPException(403, refusal)
        return principal

    scoped.scope = scope  # read by the test that holds every /v1 route to a scope
    return scoped


# Every /v1 endpoint takes exactly one of these (docs/privacy.md, "Who can see what").
IngestKey = Annotated[Principal, Depends(require("ingest"))]
ReadKey = Annotated[Principal, Depends(require("read"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]
