"""Projects and their API keys. Keys are shown once and stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg

KEY_PREFIX = "bgl_"

# What a key may do (docs/privacy.md): ingest writes sessions and spans, read is every GET,
# admin changes state (resolve, baselines, incidents, alert routes, erasure, retention, redaction).
SCOPES = ("ingest", "read", "admin")
ALL_SCOPES = frozenset(SCOPES)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, the one project it is bound to, what the key may do, until
    when, and which ready redactors its project applies before storage."""

    key_id: uuid.UUID
    project_id: uuid.UUID
    scopes: frozenset[str] = ALL_SCOPES
    expires_at: datetime | None = None
    redactors: tuple[str, ...] = ()


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


def create_key(conn: psycopg.Connection, project_name: str, scopes: tuple[str, ...] = SCOPES,
               expires_at: datetime | None = None) -> NewKey:
    """A new key with these scopes (default: all three), valid until ``expires_at`` (or revoked)."""
    unknown = set(scopes) - ALL_SCOPES
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(sorted(unknown)) or 'none'})")
    project_id = ensure_project(conn, project_name)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = conn.execute(
        "insert into api_keys (project_id, key_hash, key_prefix, scopes, expires_at) values (%s, %s, %s, %s, %s)"
        " returning key_id",
        (project_id, hash_key(secret), secret[:12], [s for s in SCOPES if s in scopes], expires_at),
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
    """(key id, project, prefix, created, revoked, scopes, expires, last used) per key."""
    return conn.execute(
        "select k.key_id, p.name, k.key_prefix, k.created_at, k.revoked_at, k.scopes, k.expires_at, k.last_used_at"
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
    """The active key with this hash (see hash_key), or None; an expired key is returned (with
    its expiry) so that the caller can say why it is refused."""
    cur = await conn.execute(
        "select k.key_id, k.project_id, k.scopes, k.expires_at, coalesce(p.redactors, '{}')"
        " from api_keys k left join project_data_policies p using (project_id)"
        " where k.key_hash = %s and k.revoked_at is null",
        (key_hash,),
    )
    row = await cur.fetchone()
    return Principal(row[0], row[1], frozenset(row[2]), row[3], tuple(row[4])) if row else None


async def mark_used(conn: psycopg.AsyncConnection, key_ids: list[uuid.UUID]) -> None:
    """Record that these keys were used now (the API calls it at most once a minute per key)."""
    await conn.execute("update api_keys set last_used_at = now() where key_id = any(%s)", (key_ids,))
