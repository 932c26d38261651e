"""Links from alerts into Superset: the URL formats docs/superset.md documents (native filters
in the URL as Rison, URL-encoded); the dashboards' filter ids and slugs are part of the assets
in superset/assets, and tests/superset opens these URLs in a browser."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import quote

SESSION_DETAIL_FILTER = "NATIVE_FILTER-session-detail-session"


def rison_text(text: str) -> str:
    """A Rison string: quoted, with ! and ' escaped by !."""
    return "'" + text.replace("!", "!!").replace("'", "!'") + "'"


def session_detail_url(superset_base_url: str, session_id: str) -> str:
    """The Session detail dashboard with one session chosen."""
    value = rison_text(str(session_id))
    rison = (f"({SESSION_DETAIL_FILTER}:(extraFormData:(filters:!((col:session_id,op:IN,val:!({value})))),"
             f"filterState:(value:!({value})),id:{SESSION_DETAIL_FILTER}))")
    return f"{superset_base_url.rstrip('/')}/superset/dashboard/session-detail/?native_filters={quote(rison, safe='')}"


def hours_around(first: datetime, last: datetime) -> tuple[datetime, datetime]:
    """From the hour of ``first`` to the end of the hour of ``last`` (UTC)."""
    since = first.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    until = last.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return since, until


def dashboard_url(superset_base_url: str, slug: str, *, agent: str | None = None,
                  since: datetime | None = None, until: datetime | None = None) -> str:
    """A dashboard (incidents, regressions-and-anomalies) with its Agent filter and Time range set."""
    filters = []
    if agent is not None:
        filter_id, value = f"NATIVE_FILTER-{slug}-agent", rison_text(agent)
        filters.append(f"{filter_id}:(extraFormData:(filters:!((col:agent_name,op:IN,val:!({value})))),"
                       f"filterState:(value:!({value})),id:{filter_id})")
    if since is not None and until is not None:
        filter_id = f"NATIVE_FILTER-{slug}-time"
        value = rison_text(f"{since.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S} : "
                           f"{until.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S}")
        filters.append(f"{filter_id}:(extraFormData:(time_range:{value}),filterState:(value:{value}),id:{filter_id})")
    query = "?native_filters=" + quote("(" + ",".join(filters) + ")", safe="") if filters else ""
    return f"{superset_base_url.rstrip('/')}/superset/dashboard/{slug}/{query}"
