"""Superset's configuration for Bagula (loaded through SUPERSET_CONFIG_PATH).

It runs inside the Superset virtual environment, where Bagula is not installed: standard
library only. `bagula superset init|serve` sets the variables below; a deployment that runs
Superset on its own sets them itself. There are no defaults for secrets or URLs: a Superset
started without them refuses to start instead of running with a key everyone knows.
"""

import os
import re
import uuid
from datetime import timedelta


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise RuntimeError(f"{name} is not set; `bagula superset init` and `bagula superset serve` set it")
    return value


# Signs sessions and encrypts the database passwords kept in the metadata database:
# it must stay the same for the life of that database.
SECRET_KEY = _required("BAGULA_SUPERSET_SECRET_KEY")
# Superset's own metadata (users, dashboards, charts), not the marts.
SQLALCHEMY_DATABASE_URI = _required("BAGULA_SUPERSET_METADATA_DB_URL")

if SQLALCHEMY_DATABASE_URI.startswith("sqlite"):
    # The web server's threads share one SQLite file: wait for a lock rather than fail.
    SQLALCHEMY_ENGINE_OPTIONS = {"connect_args": {"timeout": 30, "check_same_thread": False}}

APP_NAME = "Bagula"

# Dashboards read only the marts, through a read-only role; nothing is uploaded or written.
# Template processing (Jinja in SQL) is on for one thing: the Session explorer's Search filter,
# whose words a virtual dataset passes to PostgreSQL's full-text search through
# `bagula_search` below. Adhoc SQL in charts still may not hold subqueries
# (ALLOW_ADHOC_SUBQUERY stays off), and row-level security applies to every query.
FEATURE_FLAGS = {
    "ALERT_REPORTS": False,
    "THUMBNAILS": False,
    "ENABLE_TEMPLATE_PROCESSING": True,
    "DASHBOARD_RBAC": False,
    "EMBEDDED_SUPERSET": False,
}
ROW_LIMIT = 10000
SQL_MAX_ROW = 100000
SUPERSET_WEBSERVER_TIMEOUT = int(timedelta(minutes=2).total_seconds())

# Nothing leaves the machine: no map tiles, no telemetry pixel, no web fonts. The content
# security policy keeps the browser from fetching them even though the bundled front end
# asks for them.
MAPBOX_API_KEY = ""
CONTENT_SECURITY_POLICY_WARNING = False
TALISMAN_ENABLED = True
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'", "data:"],
        "script-src": ["'self'", "'strict-dynamic'"],
    },
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,
    "session_cookie_secure": False,
}

# Caches in the metadata database (Superset's default for explore and filter state); chart
# data is not cached, so a dashboard shows the marts as they are now.
CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}

# "Last week" and the like end now, not at midnight: monitoring wants the latest hours too.
DEFAULT_RELATIVE_START_TIME = "now"
DEFAULT_RELATIVE_END_TIME = "now"


def FLASK_APP_MUTATOR(app) -> None:  # noqa: N802 - the name Superset looks up
    """One time-range parse at a time. Superset parses "Last week" and the like with
    pyparsing, whose packrat cache (switched on by superset.utils.date_parser) all threads of
    the web server share: two charts parsing at once failed now and then with "Expected '(',
    found ')'". A parse takes well under a millisecond."""
    import threading

    from superset.utils import date_parser

    parse, lock = date_parser.datetime_eval, threading.Lock()

    def datetime_eval(datetime_expression=None):
        with lock:
            return parse(datetime_expression)

    # get_since_until, the only caller, looks the function up in its module at each call.
    date_parser.datetime_eval = datetime_eval


# --- session search (the Session explorer's Search filter) ----------------------------------

SEARCH_MAX_CHARS = 500


def _literal(text: str) -> str:
    """A PostgreSQL string literal that means exactly ``text``, whatever the server's settings."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def bagula_search(values, alias: str = "x") -> dict:
    """SQL for a search over ``marts.session_search`` (as ``alias``) from a Search filter's values,
    the same search as GET /v1/sessions?q=... (ingest_api/store/search.py): words and phrases
    (websearch_to_tsquery), a session id, a single token with a digit inside identifiers.

    ``{"where": condition, "rank": expression}``, or empty strings without words. The values are
    whatever a user typed: they reach the SQL only as literals made here.
    """
    if isinstance(values, str):
        values = [values]
    text = " ".join(str(v) for v in (values or []) if v is not None).replace("\x00", "").strip()[:SEARCH_MAX_CHARS]
    if not text:
        return {"where": "", "rank": ""}
    words = f"websearch_to_tsquery('english', {_literal(text)})"
    where = [f"{alias}.document @@ {words}"]
    rank = [f"ts_rank_cd({alias}.document, {words}, 32)"]
    try:
        session_id = str(uuid.UUID(text))
    except ValueError:
        session_id = None
    if session_id:
        where.append(f"{alias}.session_id = '{session_id}'")
        rank.append(f"case when {alias}.session_id = '{session_id}' then 2 else 0 end")
    elif re.fullmatch(r"\S{3,}", text) and any(c.isdigit() for c in text):
        pattern = _literal("%" + re.sub(r"([\\%_])", r"\\\1", text.lower()) + "%")
        where.append(f"{alias}.identifiers ilike {pattern}")
        rank.append(f"case when {alias}.identifiers ilike {pattern} then 1 else 0 end")
    return {"where": "(" + " or ".join(where) + ")", "rank": "(" + " + ".join(rank) + ")"}


JINJA_CONTEXT_ADDONS = {"bagula_search": bagula_search}
