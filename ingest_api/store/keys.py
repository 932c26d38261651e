"""Projects and their API keys. Keys are shown once and stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

import psycopg

KEY_PREFIX = "bgl_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key and the one project it is bound to."""

    key_id: uuid.UUID
    project_id: uuid.UUID


@dataclass(frozen=True)
class NewKey:
    key_id: uuid.UUID
    project_id: uuid.UUID
    project_name: str
    secret: str


def hash_key(secret: str) -> bytes:
    # Keys carry 256 random bits, so a fast hash is as safe as a slow one here.
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def ensure_project(conn: psycopg.Connection, name: str) -> uuid.UUID:
    row = conn.execute(
        "insert into projects (name) values (%s) on conflict (name) do update set name = excluded.name"
        " returning project_id",
        (name,),
    ).fetchone()
    return row[0]


def project_id(conn: psycopg.Connection, name: str) -> uuid.UUID | None:
    row = conn.execute("select project_id from projects where name = %s", (name,)).fetchone()
    return row[0] if row else None


def create_key(conn: psycopg.Connection, project_name: str) -> NewKey:
    project_id = ensure_project(conn, project_name)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = conn.execute(
        "insert into api_keys (project_id, key_hash, key_prefix) values (%s, %s, %s)"
        " returning key_id",
        (project_id, hash_key(secret), secret[:12]),
    ).fetchone()[0]
    return NewKey(key_id, project_id, project_name, secret)


def revoke_key(conn: psycopg.Connection, key_id_or_secret: str) -> int:
    """Revoke by key id or by the key itself; returns how many keys were revoked."""
    try:
        key_id = uuid.UUID(key_id_or_secret)
        where, param = "key_id = %s", key_id
    except ValueError:
        where, param = "key_hash = %s", hash_key(key_id_or_secret)
    cur = conn.execute(
        f"update api_keys set revoked_at = now() where {where} and revoked_at is null", (param,)
    )
    return cur.rowcount


def list_keys(conn: psycopg.Connection, project_name: str | None = None) -> list[tuple]:
    return conn.execute(
        "select k.key_id, p.name, k.key_prefix, k.created_at, k.revoked_at"
        " from api_keys k join projects p using (project_id)"
        " where %(project)s::text is null or p.name = %(project)s"
        " order by k.created_at",
        {"project": project_name},
    ).fetchall()


def project_has_active_key(conn: psycopg.Connection, project_name: str) -> bool:
    return conn.execute(
        "select exists (select 1 from api_keys k join projects p using (project_id)"
        " where p.name = %s and k.revoked_at is null)",
        (project_name,),
    ).fetchone()[0]


async def authenticate(conn: psycopg.AsyncConnection, key_hash: bytes) -> Principal | None:
    """The active key with this hash (see hash_key), or None."""
    cur = await conn.execute(
        "select key_id, project_id from api_keys where key_hash = %s and revoked_at is null", (key_hash,),
    )
    row = await cur.fetchone()
    return Principal(row[0], row[1]) if row else None
