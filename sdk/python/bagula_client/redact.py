"""Redaction at the source: ready redactors for the client's ``redact`` hook.

A redactor is ``fn(value, field) -> value``: the client calls it, in its sender thread and
before encoding, on each of a session's free-text fields and payloads (``initialRequest``,
``metadata``, a turn's ``trigger`` and ``userFeedback``, an LLM call's ``messages`` and
``response``, the agent's response ``message``, a tool call's ``arguments``, ``result`` and
``error``, the outcome's ``result``); ``field`` is that name. What it returns is sent instead.
The agent's own objects are never modified.

    from bagula_client import BagulaClient, redact
    client = BagulaClient(..., redact=redact.pii)                      # all four below
    client = BagulaClient(..., redact=redact.compose(redact.emails, my_redactor))

The ready ones walk dicts and lists and replace matches inside every string:

- ``emails``: ``[REDACTED:email]``
- ``phone_numbers``: ``[REDACTED:phone]``: numbers with a ``+`` country code (8 to 15 digits),
  North American ``(555) 123-4567`` / ``555-123-4567`` / ``555.123.4567``, and national numbers
  starting with 0 in groups (``020 7946 0958``, ``06 12 34 56 78``); plain runs of digits,
  dates and version numbers are left alone
- ``card_numbers``: ``[REDACTED:card]``: 13 to 19 digits (spaces or dashes allowed) that pass
  the Luhn check and start like a card (2-6)
- ``api_keys``: ``[REDACTED:api_key]``: OpenAI and Anthropic (``sk-...``), AWS access key ids,
  GitHub, Slack, Google, Stripe and Bagula keys, JWTs, ``Bearer`` tokens and the values of
  ``api_key=``/``token:``/``password=``/``secret=`` pairs

They are heuristics (what they match is pinned by ``sdk/testdata/redaction.json``, shared
with the TypeScript client): add your own for identifiers only your domain knows.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

__all__ = ["emails", "phone_numbers", "card_numbers", "api_keys", "pii", "compose", "strings", "Redactor"]

Redactor = Callable[[Any, Optional[str]], Any]

# ASCII classes everywhere: the same patterns behave alike in Python's re and JavaScript's RegExp.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])",
                    re.ASCII)
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,4}){2,5}"  # +44 20 7946 0958, +1 (555) 123-4567
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567
    r"|0\d{1,4}(?:[ .-]\d{2,4}){2,4}"  # 020 7946 0958, 06 12 34 56 78
    r")(?!\w|[.-]\d)",
    re.ASCII,
)
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])", re.ASCII)
_API_KEY = re.compile(
    r"\b(?:"
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|bgl_[A-Za-z0-9_-]{20,}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
    r")",
    re.ASCII,
)
_BEARER = re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]{16,}", re.ASCII | re.IGNORECASE)
_KEY_VALUE = re.compile(
    r"\b((?:api[_-]?key|apikey|secret|token|password|passwd|access[_-]?key)[\"']?\s*[:=]\s*[\"']?)"
    r"(?!\[REDACTED)[^\s\"',;]{8,}",
    re.ASCII | re.IGNORECASE,
)

EMAIL_TOKEN = "[REDACTED:email]"
PHONE_TOKEN = "[REDACTED:phone]"
CARD_TOKEN = "[REDACTED:card]"
API_KEY_TOKEN = "[REDACTED:api_key]"


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _phone(match: re.Match) -> str:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    return PHONE_TOKEN if 7 <= digits <= 15 else text


def _card(match: re.Match) -> str:
    text = match.group(0)
    digits = text.replace(" ", "").replace("-", "")
    if 13 <= len(digits) <= 19 and "2" <= digits[0] <= "6" and _luhn(digits):
        return CARD_TOKEN
    return text


# Cheap exact prefilters before the regular expressions (most strings hold nothing to redact):
# a phone number has at least 7 digits, a card 13; the shortest key-like match is 14 characters.
_MIN_PHONE_DIGITS = 7
_MIN_KEY_LENGTH = 14


def _digits(text: str) -> int:
    return sum(text.count(d) for d in "0123456789")


def _emails_in(text: str) -> str:
    return _EMAIL.sub(EMAIL_TOKEN, text) if "@" in text else text


def _phones_in(text: str) -> str:
    return _PHONE.sub(_phone, text) if _digits(text) >= _MIN_PHONE_DIGITS else text


def _cards_in(text: str) -> str:
    return _CARD.sub(_card, text) if _digits(text) >= 13 else text


# What each key pattern cannot match without (substring tests are far cheaper than a scan).
_KEY_PREFIXES = ("sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "AIza",
                 "_live_", "_test_", "bgl_", "eyJ")
_KEY_NAMES = ("key", "secret", "token", "passw")


def _api_keys_in(text: str) -> str:
    if len(text) < _MIN_KEY_LENGTH:
        return text
    if any(prefix in text for prefix in _KEY_PREFIXES):
        text = _API_KEY.sub(API_KEY_TOKEN, text)
    lower = text.lower()
    if "bearer" in lower:
        text = _BEARER.sub(lambda m: m.group(1) + API_KEY_TOKEN, text)
    if ("=" in text or ":" in text) and any(name in lower for name in _KEY_NAMES):
        text = _KEY_VALUE.sub(lambda m: m.group(1) + API_KEY_TOKEN, text)
    return text


def strings(replace: Callable[[str], str]) -> Redactor:
    """A redactor from a function over text: applied to every string inside the value (dicts and
    lists walked, their keys kept; other objects as their text); a container inside itself
    becomes "[Circular]"."""

    def walk(value: Any, path: set) -> Any:
        if isinstance(value, str):
            return replace(value)
        if isinstance(value, (bool, int, float)) or value is None:
            return value
        if isinstance(value, (dict, list, tuple)):
            if id(value) in path:
                return "[Circular]"
            path.add(id(value))
            try:
                if isinstance(value, dict):
                    return {k: walk(v, path) for k, v in value.items()}
                return [walk(v, path) for v in value]
            finally:
                path.discard(id(value))
        return replace(str(value))

    def redactor(value: Any, field: Optional[str] = None) -> Any:
        return walk(value, set())

    redactor.__name__ = getattr(replace, "__name__", "redactor")
    return redactor


def compose(*redactors: Redactor) -> Redactor:
    """Apply several redactors in turn."""

    def redactor(value: Any, field: Optional[str] = None) -> Any:
        for redact in redactors:
            value = redact(value, field)
        return value

    return redactor


def _pii_in(text: str) -> str:
    text = _emails_in(_api_keys_in(text))
    digits = _digits(text)
    if digits >= 13:
        text = _CARD.sub(_card, text)
        digits = _digits(text)
    return _PHONE.sub(_phone, text) if digits >= _MIN_PHONE_DIGITS else text


emails = strings(_emails_in)
phone_numbers = strings(_phones_in)
card_numbers = strings(_cards_in)
api_keys = strings(_api_keys_in)
# One walk with the four in the order that keeps each from eating another's match: keys first
# (they can hold digits and @), then e-mail addresses, card numbers, phone numbers.
pii = strings(_pii_in)
