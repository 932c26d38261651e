"""Request dependencies, as Annotated aliases: settings, pool, connection, caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Request
from psycopg_pool import AsyncConnectionPool

from ingest_api.access import Access, bearer_token, well_formed
from ingest_api.settings import ApiSettings
from ingest_api.store import keys
from ingest_api.store.keys import Principal


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]


async def get_connection(pool: PoolDep) -> AsyncIterator[psycopg.AsyncConnection]:
    async with pool.connection() as conn:
        yield conn


ConnectionDep = Annotated[psycopg.AsyncConnection, Depends(get_connection)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def get_access(request: Request) -> Access:
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
    refusal = access.over_rate(principal)
    if refusal is not None:
        raise HTTPException(429, refusal.detail, headers={"Retry-After": str(refusal.retry_after_s)})
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
