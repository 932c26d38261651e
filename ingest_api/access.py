"""Who may call, how often, cheaply: API-key format checks that need no database, a short
cache of key lookups, per-key rate limits and a brake on clients that keep failing to
authenticate. Counters live in this process: with W workers (or replicas) a client can make
up to W times a limit before every process has refused it (see the README's limits)."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import limits
from cachetools import TTLCache
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from ingest_api.settings import ApiSettings
from ingest_api.store.keys import KEY_PREFIX, Principal

# What `bagula keys create` issues: the prefix and 32 random bytes, URL-safe base64.
KEY_FORMAT = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")


def well_formed(secret: str) -> bool:
    return KEY_FORMAT.fullmatch(secret) is not None


def bearer_token(authorization: str) -> str | None:
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    return secret if scheme.lower() == "bearer" and secret else None


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
