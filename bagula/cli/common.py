"""What several command groups need: the database URL, parsing times and durations."""

from __future__ import annotations

from datetime import datetime

import click

from bagula.settings import get_platform_settings


def database_url() -> str:
    try:
        return get_platform_settings().require_database_url()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


def aware(text: str, name: str) -> datetime:
    """An ISO 8601 time with a zone, or a usage error naming the option."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint=name) from None
    if moment.tzinfo is None:
        raise click.BadParameter("needs a time zone, e.g. 2026-11-25T10:00:00Z", param_hint=name)
    return moment


def parse_duration(text: str) -> float:
    """'90s', '10m', '2h', '7d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"not a duration: {text!r} (e.g. 90s, 10m, 2h, 7d)") from None
