"""Reading and parsing the ingest request body: size limit, gzip, JSON, envelope."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import HTTPException, Request


class PayloadTooLarge(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed; 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise HTTPException(415, f"unsupported Content-Encoding {encoding!r}; use gzip or none")

    chunks: list[bytes] = []
    size = 0
    # wbits=31: gzip container only.
    inflater = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    try:
        async for chunk in request.stream():
            if inflater is not None:
                # Never inflate more than the limit allows: a small bomb stays small.
                chunk = inflater.decompress(chunk, limit + 1 - size)
                if inflater.unconsumed_tail:
                    raise _too_large(limit)
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if inflater is not None:
            tail = inflater.flush()
            size += len(tail)
            if size > limit:
                raise _too_large(limit)
            chunks.append(tail)
            if not inflater.eof:
                raise HTTPException(400, "gzip body is truncated")
    except zlib.error as exc:
        raise HTTPException(400, f"body is not valid gzip: {exc}") from None
    return b"".join(chunks)


@dataclass
class Envelope:
    sessions: list[Any]
    # True when the text needs a per-session walk for NUL / invalid UTF-8.
    suspicious_text: bool


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_envelope(body: bytes, max_sessions: int) -> Envelope:
    """``{"sessions": [...], "timestamp": ...}``, or a 4xx for the request as a whole."""
    suspicious = b"\\u0000" in body
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses invalid UTF-8 and lone surrogates anywhere in the body.
        # Such text is a fault of one session, not of the request: parse
        # leniently and let validation pin it on the sessions that carry it.
        try:
            text = body.decode("utf-8", errors="surrogateescape")
            document = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise HTTPException(400, f"body is not valid JSON: {exc}") from None
        suspicious = True
    if not isinstance(document, dict) or not isinstance(document.get("sessions"), list):
        raise HTTPException(
            422, 'body must be a JSON object {"sessions": [...], "timestamp": <epoch ms>}'
        )
    timestamp = document.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool) or not isinstance(timestamp, (int, float))
    ):
        raise HTTPException(422, "timestamp must be a number (epoch milliseconds)")
    sessions = document["sessions"]
    if len(sessions) > max_sessions:
        raise PayloadTooLarge(
            f"batch has {len(sessions)} sessions; the limit is {max_sessions} per request"
        )
    return Envelope(sessions=sessions, suspicious_text=suspicious)
