"""Who may call, how often, cheaply: API-key format checks that need no database, a short
cache of key lookups, per-key rate limits and a brake on clients that keep failing to
authenticate, what each key's scopes allow, and when each key was last used. Counters live in
this process: with W workers (or replicas) a client can make up to W times a limit before
every process has refused it (see the README's limits).

Scopes (``ingest``, ``read``, ``admin``): every ``/v1`` endpoint takes exactly one of the
dependencies ``IngestKey``, ``ReadKey`` or ``AdminKey`` (``ingest_api.deps``, built on
``require``); ``tests/ingest_api/test_lifecycle_keys.py`` walks the routes to hold them to it."""

from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import limits
from cachetools import TTLCache
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from ingest_api.settings import ApiSettings
from ingest_api.store.keys import KEY_PREFIX, SCOPES, Principal

# What `bagula keys create` issues: the prefix and 32 random bytes, URL-safe base64.
KEY_FORMAT = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")


def well_formed(secret: str) -> bool:
    return KEY_FORMAT.fullmatch(secret) is not None


def bearer_token(authorization: str) -> str | None:
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    return secret if scheme.lower() == "bearer" and secret else None


# A key's last use is written at most this often, per key and API process.
LAST_USED_EVERY_S = 60.0


def scope_refusal(principal: Principal, scope: str) -> str | None:
    """Why this key may not call an endpoint that needs ``scope`` (403), or None."""
    if scope in principal.scopes:
        return None
    held = ", ".join(s for s in SCOPES if s in principal.scopes)
    return f"this API key's scopes ({held}) do not include {scope!r}, which this endpoint needs"


def expired(principal: Principal, now: datetime | None = None) -> bool:
    return principal.expires_at is not None and principal.expires_at <= (now or datetime.now(timezone.utc))


@dataclass
class Refusal:
    """Why a request is refused before it is served, and for how long to wait."""

    status: int
    detail: str
    retry_after_s: int | None = None


class Access:
    """The API process's access state: the key cache and the rate-limit windows."""

    def __init__(self, settings: ApiSettings) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_key = limits.parse_many(settings.rate_limit_per_key)
        self._failed_auth = limits.parse(settings.failed_auth_limit)
        # key hash -> Principal, or None for a key that is unknown or revoked
        self._keys: TTLCache | None = (TTLCache(maxsize=100_000, ttl=settings.auth_cache_s)
                                       if settings.auth_cache_s > 0 else None)
        # key id -> when this process last recorded its use (monotonic seconds)
        self._used: TTLCache = TTLCache(maxsize=100_000, ttl=LAST_USED_EVERY_S)

    def _retry_after(self, item: limits.RateLimitItem, *identifiers: str) -> int:
        reset_at = self._limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def client_blocked(self, client: str) -> Refusal | None:
        """429 for a client that failed to authenticate too often lately (no database work)."""
        if self._limiter.test(self._failed_auth, "auth-failures", client):
            return None
        return Refusal(429, "too many failed authentications from this address; wait and retry",
                       self._retry_after(self._failed_auth, "auth-failures", client))

    def failed(self, client: str) -> None:
        self._limiter.hit(self._failed_auth, "auth-failures", client)

    def cached(self, key_hash: bytes) -> tuple[bool, Principal | None]:
        """(found in the cache, its principal or None for a key known to be unknown)."""
        if self._keys is None or key_hash not in self._keys:
            return False, None
        return True, self._keys[key_hash]

    def remember(self, key_hash: bytes, principal: Principal | None) -> None:
        if self._keys is not None:
            self._keys[key_hash] = principal

    def over_rate(self, principal: Principal) -> Refusal | None:
        """429 once the key has made its allowed number of requests in the window."""
        for item in self._per_key:
            if not self._limiter.hit(item, "key", str(principal.key_id)):
                return Refusal(429, f"rate limit of this API key exceeded ({item}); retry later",
                               self._retry_after(item, "key", str(principal.key_id)))
        return None

    def use_due(self, key_id: uuid.UUID) -> bool:
        """True once a minute per key: then the caller records the key's last use (one small
        write a minute per active key, never one per request)."""
        if key_id in self._used:
            return False
        self._used[key_id] = time.monotonic()
        return True
