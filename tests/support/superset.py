"""Helpers for the Superset tests: a filled marts database, the CLI, the metadata database, the API."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import yaml

from bagula.superset import ASSETS_DIR, SUPERSET_DIR, Superset, superset_env, superset_python
from orchestration.detection import links

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "superset"

# The dashboards show open items only: resolve every fifth anomaly, as a user would.
RESOLVE_SOME_SQL = """
update anomalies set resolved = true, resolved_at = detected_at + interval '1 hour'
where anomaly_id in (select anomaly_id from (select anomaly_id, row_number() over (order by anomaly_id) as n
                                             from anomalies) numbered where n % 5 = 0)
"""


def run_cli(args: list[str], database_url: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """`bagula ...` as a user runs it; BAGULA_SUPERSET_* from this process's environment are left out."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BAGULA_SUPERSET_")}
    return subprocess.run(
        [sys.executable, "-m", "bagula", *args],
        env={**base, "BAGULA_DATABASE_URL": database_url, "BAGULA_DATA_DIR": str(data_dir), **env},
        capture_output=True, text=True, timeout=600,
    )


def shown_admin_password(output: str) -> str | None:
    found = re.search(r"password \(shown once\): (\S+)", output)
    return found.group(1) if found else None


def assets(folder: str) -> dict[str, dict]:
    """The repository's asset files of one kind, by file name."""
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted((ASSETS_DIR / folder).glob("*.yaml"))}


def chart_uuid(slice_name: str) -> str:
    return next(c["uuid"] for c in assets("charts").values() if c["slice_name"] == slice_name)


def dashboard_charts(dashboard: dict) -> set[str]:
    return {node["meta"]["sliceName"] for node in dashboard["position"].values()
            if isinstance(node, dict) and node.get("type") == "CHART"}


def metadata_snapshot(sqlite_path: Path) -> dict[str, list]:
    """Every row of the tables that hold users, roles, connections and assets."""
    tables = ["ab_user", "ab_role", "ab_user_role", "ab_permission_view_role", "dbs", "tables", "table_columns",
              "sql_metrics", "slices", "dashboards", "dashboard_slices", "dashboard_user", "slice_user",
              "row_level_security_filters", "rls_filter_roles", "rls_filter_tables"]
    with sqlite3.connect(sqlite_path) as conn:
        return {table: sorted(map(repr, conn.execute(f"select * from {table}"))) for table in tables}


DETAIL_FILTER = links.SESSION_DETAIL_FILTER
# What one session's tool result says, and nothing else does: search finds it.
PHRASE = "the replacement shipped on pallet 7 to the Lisbon depot"
# The second project and its agent: users of the first must never see them.
OTHER_PROJECT, OTHER_AGENT = "acme-billing", "billing-reconciler"


# The URLs docs/superset.md documents, as alerts build them; the tests open them in a browser and
# compare them with the links the datasets build in SQL.
session_detail_url = links.session_detail_url
rison_text = links.rison_text
dashboard_url = links.dashboard_url


def pg_rows(url: str, query: str, params: tuple | dict = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


@dataclass
class SupersetSite:
    """A Superset over a database filled by `bagula simulate`, as `bagula superset init` left it."""

    database_url: str
    data_dir: Path
    base_url: str
    admin_username: str
    admin_password: str
    first_init_output: str
    superset: Superset
    # How the projects got their Superset roles: `bagula keys create` of a new project, then
    # `bagula superset sync-projects` (for the project made without the command).
    keys_create_output: str = ""
    sync_projects_output: str = ""
    # The session whose tool result holds PHRASE (in the second project).
    needle_id: str = ""

    @property
    def metadata_db(self) -> Path:
        return self.data_dir / "superset" / "superset.db"

    @property
    def reader_password(self) -> str:
        return (self.data_dir / "superset" / "reader-password").read_text().strip()

    @contextmanager
    def api(self, username: str | None = None, password: str | None = None) -> Iterator[httpx.Client]:
        """A client logged in through Superset's API (JWT bearer token), as the admin or as the user given."""
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            answer = client.post("/api/v1/security/login", json={
                "username": username or self.admin_username, "password": password or self.admin_password,
                "provider": "db", "refresh": True})
            answer.raise_for_status()
            client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
            yield client

    def check_in_browser(self, slugs: list[str], *options: str, password: str | None = None) -> list[dict]:
        """superset/browser_check.py in Superset's environment (options: --agent, --user with
        ``password``, --forbid, --journey, --detail-url, --incidents, --incidents-url): one report per
        dashboard or step."""
        result = subprocess.run(
            [str(superset_python(self.superset)), str(SUPERSET_DIR / "browser_check.py"), *options, self.base_url,
             str(ARTIFACTS), *slugs],
            env={**os.environ, "BAGULA_SUPERSET_ADMIN_USERNAME": self.admin_username,
                 "BAGULA_SUPERSET_ADMIN_PASSWORD": self.admin_password, "BAGULA_CHECK_PASSWORD": password or ""},
            capture_output=True, text=True, timeout=1800,  # a dozen pages; minutes each on a machine under load
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    def create_user(self, username: str, role: str, password: str) -> None:
        """A Superset user with one role, as an admin makes one (`superset fab create-user`)."""
        python = superset_python(self.superset)
        result = subprocess.run(
            [str(python.parent / "superset"), "fab", "create-user", "--role", role, "--username", username,
             "--firstname", username, "--lastname", "Viewer", "--email", f"{username}@bagula.invalid",
             "--password", password],
            env={**os.environ, **superset_env(self.superset)}, cwd=self.superset.home,
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0 and "created" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
