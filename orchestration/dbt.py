"""The dbt project (``dbt_project/`` beside the code, or where BAGULA_DBT_PROJECT_DIR says) and
how we run it, configured from BAGULA_DATABASE_URL alone: the project ships its own profile."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
from dagster_dbt import DbtProject

from orchestration import watermark

PROJECT_DIR_ENV = "BAGULA_DBT_PROJECT_DIR"


def _project_dir() -> Path:
    """A source checkout (or an editable install) has the project beside the packages; an
    installed platform is told where it is (the image ships it in /opt/bagula/dbt_project)."""
    configured = os.environ.get(PROJECT_DIR_ENV)
    project_dir = Path(configured) if configured else Path(__file__).resolve().parents[1] / "dbt_project"
    if not (project_dir / "dbt_project.yml").is_file():
        raise RuntimeError(
            f"no dbt project in {project_dir}: set {PROJECT_DIR_ENV} to the folder of "
            "dbt_project.yml (an installed platform does not carry it among its packages)"
        )
    return project_dir.resolve()


PROJECT_DIR = _project_dir()
PROJECT = DbtProject(project_dir=PROJECT_DIR, profiles_dir=PROJECT_DIR)


def target_dir() -> Path:
    """Where dbt writes what it builds (DBT_TARGET_PATH, relative to the project; else target/)."""
    return PROJECT_DIR / os.environ.get("DBT_TARGET_PATH", "target")


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


def dbt_args(*args: str) -> list[str]:
    """A dbt command line (``build --select x``) pointed at our project and its profile."""
    return [*args, "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT.profiles_dir)]


def run_dbt(database_url: str, *args: str) -> bool:
    """Invoke dbt in this process; True when every node succeeded."""
    from dbt.cli.main import dbtRunner

    os.environ.update(dbt_env(database_url))
    result = dbtRunner().invoke(dbt_args(*args))
    return bool(result.success)


def marts_exist(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("select to_regclass('marts.agg_agent_health_hourly') is not null").fetchone()[0]


def prepare_marts(database_url: str) -> bool:
    """Unit tests of incremental models read the columns of the existing model; on a
    new database create the relations, empty, first."""
    return marts_exist(database_url) or run_dbt(database_url, "run", "--empty")


def build_vars(database_url: str, upto: int | None = None, full_refresh: bool = False) -> dict[str, int]:
    """The variables of one incremental build up to the watermark ``upto`` (default: now's).

    ``previous_watermark`` scopes the staging tests to the raw rows this build reads and
    ``watermark`` the mart tests to the rows it writes (see dbt_project.yml)."""
    with psycopg.connect(database_url) as conn:
        if upto is None:
            upto = watermark.current(conn)
        previous = 0 if full_refresh else watermark.of_marts(conn)
    return {"watermark": upto, "previous_watermark": previous}


def _manifest_stale(manifest: Path) -> bool:
    """Missing, or older than a file of the project (a model edited since the last parse)."""
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [
        PROJECT_DIR / "dbt_project.yml",
        *(PROJECT_DIR / "models").rglob("*"),
        *(PROJECT_DIR / "macros").rglob("*"),
        *(PROJECT_DIR / "tests").rglob("*"),
    ]
    return any(path.is_file() and path.stat().st_mtime > built for path in sources)


def ensure_manifest() -> Path:
    """dbt's manifest, which Dagster reads to know the models; parsed when missing or stale.
    Parsing never connects, so placeholder connection settings do."""
    manifest = Path(PROJECT.manifest_path)
    # Where Dagster reads it, whatever DBT_TARGET_PATH says for the builds (the image sends
    # those to a writable folder and ships this manifest parsed).
    if _manifest_stale(manifest) and not run_dbt(
        "postgresql://parse@localhost/parse", "parse", "--quiet", "--target-path", str(manifest.parent)
    ):
        raise RuntimeError("dbt parse failed: cannot load the dbt project")
    return manifest


def transform(database_url: str, *extra: str, full_refresh: bool = False) -> bool:
    """`dbt build` of every model and test, incremental unless ``full_refresh``."""
    if not prepare_marts(database_url):
        return False
    args = ["--vars", json.dumps(build_vars(database_url, full_refresh=full_refresh)), *extra]
    if full_refresh:
        args.append("--full-refresh")
    return run_dbt(database_url, "build", *args)


class InProcessDbt:
    """dbt in this process: the project parsed once, then each build reuses the manifest
    (a dbt process start and parse cost seconds, more than the build of one batch)."""

    def __init__(self, database_url: str, folder: str = "live") -> None:
        from dbt.cli.main import dbtRunner

        self.database_url = database_url
        # A target folder of its own: Dagster's dbt processes write theirs at the same time.
        self.target = str(target_dir() / folder)
        os.environ.update(dbt_env(database_url))
        parsed = dbtRunner().invoke(dbt_args("parse", "--quiet", "--target-path", self.target))
        if not parsed.success:
            raise RuntimeError(f"dbt parse failed: {parsed.exception}")
        self.runner = dbtRunner(manifest=parsed.result)

    def run(self, select: str | None, upto: int | None) -> list[str]:
        """``dbt run --select`` (every model when None) up to the watermark ``upto``; the models
        built. Raises on failure."""
        before = os.environ.get("PGOPTIONS")
        os.environ.update(watermark.bounded_env(dbt_env(self.database_url), upto))
        selection = ["--select", select] if select else []
        try:
            result = self.runner.invoke(dbt_args("run", "--quiet", *selection, "--target-path", self.target))
        finally:
            # The bound is this invocation's only (libpq reads PGOPTIONS at every connect).
            if before is None:
                os.environ.pop("PGOPTIONS", None)
            else:
                os.environ["PGOPTIONS"] = before
        results = getattr(result.result, "results", None) or []
        if not result.success:
            failed = [f"{r.node.name}: {r.message}" for r in results if str(r.status) in ("error", "fail")]
            raise RuntimeError("dbt run failed: " + ("; ".join(failed) or str(result.exception)))
        return [r.node.name for r in results]
