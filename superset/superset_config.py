"""Superset's configuration for Bagula (loaded through SUPERSET_CONFIG_PATH).

It runs inside the Superset virtual environment, where Bagula is not installed: standard
library only. `bagula superset init|serve` sets the variables below; a deployment that runs
Superset on its own sets them itself. There are no defaults for secrets or URLs: a Superset
started without them refuses to start instead of running with a key everyone knows.
"""

import os
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
FEATURE_FLAGS = {
    "ALERT_REPORTS": False,
    "THUMBNAILS": False,
    "ENABLE_TEMPLATE_PROCESSING": False,
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
