"""Refusing early and cheaply, before routing, authentication or reading a body (pure ASGI):
NUL characters or invalid UTF-8 in the path or query, bodies over their limit (declared or
streamed), `/v1` requests without a well-formed API key, and clients that keep failing to
authenticate. Nothing here touches the database."""

from __future__ import annotations

from urllib.parse import unquote

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest_api.access import Access, Refusal, bearer_token, well_formed
from ingest_api.problems import problem
from ingest_api.settings import ApiSettings
from ingest_api.store.keys import hash_key

# Endpoints that take large (batch) bodies; every other one takes small JSON documents.
BATCH_PATHS = frozenset({"/v1/sessions/ingest", "/v1/traces"})


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


def _text_fault(scope: Scope) -> Refusal | None:
    path = scope.get("path", "")
    if "\x00" in path:
        return Refusal(400, "the path contains a NUL character")
    query = scope.get("query_string", b"").decode("latin-1")
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        try:
            name = unquote(name.replace("+", " "), errors="strict")
            value = unquote(value.replace("+", " "), errors="strict")
        except UnicodeDecodeError:
            return Refusal(400, f"query parameter {unquote(name, errors='replace')!r} is not valid UTF-8")
        if "\x00" in name or "\x00" in value:
            return Refusal(400, f"query parameter {name.replace(chr(0), '?')!r} contains a NUL character")
    return None


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: ApiSettings, access: Access) -> None:
        self.app = app
        self.settings = settings
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = (self.settings.max_body_bytes if scope["path"] in BATCH_PATHS
                 else self.settings.max_small_body_bytes)
        declared = _content_length(scope)
        refusal = (Refusal(413, f"request body exceeds the limit of {limit} bytes")
                   if declared is not None and declared > limit else None)
        refusal = refusal or _text_fault(scope) or self._auth_fault(scope)
        if refusal is not None:
            headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s else {}
            if refusal.status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            await problem(refusal.status, refusal.detail, headers=headers)(scope, receive, send)
            return

        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)

    def _auth_fault(self, scope: Scope) -> Refusal | None:
        if not scope["path"].startswith("/v1/"):
            return None
        client = _client(scope)
        authorization = _header(scope, b"authorization")
        secret = bearer_token(authorization) if authorization is not None else None
        blocked = self.access.client_blocked(client)
        if blocked is not None:
            # A key known to be good (in the cache) still passes: the brake is on guessing.
            found, principal = self.access.cached(hash_key(secret)) if secret else (False, None)
            return None if found and principal is not None else blocked
        if secret is None:
            return Refusal(401, "missing API key: send 'Authorization: Bearer <key>'")
        if not well_formed(secret):
            self.access.failed(client)
            return Refusal(401, "unknown or revoked API key")
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"
