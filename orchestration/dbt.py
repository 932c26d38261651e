"""dbt, configured from BAGULA_DATABASE_URL alone: the project ships its own profile."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg

from ingest_api.settings import get_settings
from ingest_api.store import detection as store

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"


def dbt_project_dir() -> Path:
    return get_settings().dbt_project_dir or DBT_PROJECT_DIR


def dbt_env(database_url: str) -> dict[str, str]:
    """The variables dbt_project/profiles.yml reads, from a postgresql:// URL."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError(f"not a PostgreSQL URL: {parts.scheme}://…")
    return {
        "BAGULA_DBT_HOST": parts.hostname or "localhost",
        "BAGULA_DBT_PORT": str(parts.port or 5432),
        "BAGULA_DBT_USER": unquote(parts.username or ""),
        "BAGULA_DBT_PASSWORD": unquote(parts.password or ""),
        "BAGULA_DBT_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        # JIT-compiling the marts' queries costs seconds per model and buys nothing
        # at this size: incremental runs read a few thousand rows.
        "PGOPTIONS": "-c jit=off",
    }


def ingest_horizon(database_url: str) -> int:
    """One upper bound for every model of a run (see dbt_project/macros/ingest_window.sql)."""
    with psycopg.connect(database_url) as conn:
        return store.ingest_horizon(conn)


def dbt_args(*args: str, project_dir: Path | None = None) -> list[str]:
    """A dbt command line (``build --select x``) pointed at our project and its profile."""
    project = str(project_dir or dbt_project_dir())
    return [*args, "--project-dir", project, "--profiles-dir", project]


def run_dbt(database_url: str, *args: str, project_dir: Path | None = None) -> bool:
    """Invoke dbt in this process; True when every node succeeded."""
    from dbt.cli.main import dbtRunner

    os.environ.update(dbt_env(database_url))
    result = dbtRunner().invoke(dbt_args(*args, project_dir=project_dir))
    return bool(result.success)


def previous_horizon(database_url: str) -> int:
    """The horizon the last run read up to (0 before the first run)."""
    with psycopg.connect(database_url) as conn:
        if conn.execute("select to_regclass('marts.fct_sessions') is null").fetchone()[0]:
            return 0
        return conn.execute("select coalesce(max(ingest_batch), 0) from marts.fct_sessions").fetchone()[0]


def marts_exist(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("select to_regclass('marts.agg_agent_health_hourly') is not null").fetchone()[0]


def prepare_marts(database_url: str) -> bool:
    """Unit tests of incremental models read the columns of the existing model; on a
    new database create the relations, empty, first."""
    return marts_exist(database_url) or run_dbt(database_url, "run", "--empty")


def build_vars(database_url: str, horizon: int | None = None, full_refresh: bool = False) -> dict[str, int]:
    """The variables of one incremental build up to ``horizon`` (default: now's)."""
    if horizon is None:
        horizon = ingest_horizon(database_url)
    # Test what this run reads and writes, not the history (see dbt_project.yml): raw
    # rows from the previous horizon on, mart rows stamped with this one.
    previous = 0 if full_refresh else previous_horizon(database_url)
    return {"ingest_horizon": horizon, "test_from_batch": horizon, "test_from_txid": previous}


def _manifest_stale(manifest: Path) -> bool:
    """Missing, or older than a file of the project (a model edited since the last parse)."""
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [DBT_PROJECT_DIR / "dbt_project.yml", *(DBT_PROJECT_DIR / "models").rglob("*"),
               *(DBT_PROJECT_DIR / "macros").rglob("*"), *(DBT_PROJECT_DIR / "tests").rglob("*")]
    return any(path.is_file() and path.stat().st_mtime > built for path in sources)


def ensure_manifest() -> Path:
    """dbt's manifest, which Dagster reads to know the models; parsed when missing or stale.
    Parsing never connects, so placeholder connection settings do."""
    manifest = DBT_PROJECT_DIR / "target" / "manifest.json"
    if _manifest_stale(manifest) and not run_dbt("postgresql://parse@localhost/parse", "parse", "--quiet",
                                                 project_dir=DBT_PROJECT_DIR):
        raise RuntimeError("dbt parse failed: cannot load the dbt project")
    return manifest


def transform(database_url: str, *extra: str, full_refresh: bool = False) -> bool:
    """`dbt build` of every model and test, incremental unless ``full_refresh``."""
    if not prepare_marts(database_url):
        return False
    test_vars = build_vars(database_url, full_refresh=full_refresh)
    args = ["--vars", json.dumps(test_vars), *extra]
    if full_refresh:
        args.append("--full-refresh")
    return run_dbt(database_url, "build", *args)
