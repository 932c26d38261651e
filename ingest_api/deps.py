"""Request dependencies, as Annotated aliases: settings, pool, connection, caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Request
from psycopg_pool import AsyncConnectionPool

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


async def get_principal(request: Request, pool: PoolDep) -> Principal:
    """The API key's project. Uses its own short-lived connection so that reading a
    slow upload never holds a pooled connection."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    async with pool.connection() as conn:
        principal = await keys.authenticate(conn, secret.strip())
    if principal is None:
        raise _unauthorized("unknown or revoked API key")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
