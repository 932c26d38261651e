"""The Superset launcher: Superset dashboards over the marts.

Superset lives in its own virtual environment (scripts/ensure-superset.sh): its pins clash
with ours. This module runs on our side: it works out the settings, secrets and the
read-only PostgreSQL role, then runs `superset/bootstrap.py` (init, export) or the web
server with that environment's python, passing everything in the environment.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import psycopg
from psycopg import sql

from bagula.settings import PlatformSettings, SupersetSettings

SOURCE_ROOT = Path(__file__).resolve().parents[1]
SUPERSET_DIR = SOURCE_ROOT / "superset"
ASSETS_DIR = SUPERSET_DIR / "assets"
MARTS_SCHEMA = "marts"


class SupersetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Superset:
    """Superset's settings and where the platform keeps its local state."""

    settings: SupersetSettings
    data_dir: Path

    @classmethod
    def of(cls, platform: PlatformSettings, superset: SupersetSettings) -> "Superset":
        return cls(superset, platform.data_dir)

    @property
    def home(self) -> Path:
        """Where the local Superset keeps its SQLite metadata database and generated secrets."""
        return (self.data_dir / "superset").resolve()


def superset_python(superset: Superset) -> Path:
    venv = superset.settings.venv or SOURCE_ROOT / ".venv-superset"
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        raise SupersetError(f"Superset's environment is missing ({venv}); create it with scripts/ensure-superset.sh")
    return python


def _kept_secret(path: Path) -> str:
    """A random secret generated on first use and kept (mode 600) for the next runs."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    return value


def metadata_db_url(superset: Superset) -> str:
    if superset.settings.metadata_db_url:
        return superset.settings.metadata_db_url.get_secret_value()
    return f"sqlite:///{superset.home / 'superset.db'}"


def secret_key(superset: Superset) -> str:
    if superset.settings.secret_key:
        return superset.settings.secret_key.get_secret_value()
    if superset.settings.metadata_db_url:
        # The key encrypts what that database stores; it must come with it, not from us.
        raise SupersetError("BAGULA_SUPERSET_SECRET_KEY is not set (required with BAGULA_SUPERSET_METADATA_DB_URL)")
    return _kept_secret(superset.home / "secret-key")


def reader_password(superset: Superset) -> str:
    if superset.settings.reader_password:
        return superset.settings.reader_password.get_secret_value()
    return _kept_secret(superset.home / "reader-password")


def reader_url(database_url: str, role: str, password: str | None = None) -> str:
    """The marts' database as the read-only role, as a libpq URL."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise SupersetError(f"not a PostgreSQL URL: {parts.scheme}://…")
    auth = quote(role, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
    host = parts.hostname or "localhost"
    netloc = f"{auth}@{host}:{parts.port or 5432}"
    return f"postgresql://{netloc}{parts.path or '/postgres'}"


def marts_sqlalchemy_uri(database_url: str, role: str) -> str:
    """What Superset connects with (its password is passed separately)."""
    return "postgresql+psycopg2" + reader_url(database_url, role)[len("postgresql"):]


def _can_log_in(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


def ensure_reader_role(database_url: str, role: str, password: str) -> None:
    """A login role that can read the marts and nothing else; idempotent.

    The role gets SELECT on every table and view in schema marts, now and (through default
    privileges of the role dbt connects as, i.e. this URL's) on the ones dbt creates later:
    a full refresh creates each table anew and renames it into place.
    """
    role_id = sql.Identifier(role)
    schema = sql.Identifier(MARTS_SCHEMA)
    database = unquote(urlsplit(database_url).path.lstrip("/")) or "postgres"
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("create role {} login password {}").format(role_id, sql.Literal(password)))
            elif not _can_log_in(reader_url(database_url, role, password)):
                conn.execute(sql.SQL("alter role {} password {}").format(role_id, sql.Literal(password)))
            with conn.transaction():
                conn.execute(sql.SQL(
                    "alter role {} nosuperuser nocreatedb nocreaterole noinherit noreplication nobypassrls login"
                ).format(role_id))
                # Belt and braces: even a grant made by mistake later cannot be used to write.
                conn.execute(sql.SQL("alter role {} set default_transaction_read_only = on").format(role_id))
                conn.execute(sql.SQL("alter role {} set search_path = {}").format(role_id, schema))
                conn.execute(sql.SQL("alter role {} set statement_timeout = '120s'").format(role_id))
                # Dashboards' queries run in well under a second; JIT compiling them cost up to 0.2 s
                # a chart at a million sessions.
                conn.execute(sql.SQL("alter role {} set jit = off").format(role_id))
                conn.execute(sql.SQL("grant connect on database {} to {}").format(sql.Identifier(database), role_id))
                # Before the first `bagula transform` the schema does not exist yet; dbt uses it as is.
                conn.execute(sql.SQL("create schema if not exists {}").format(schema))
                conn.execute(sql.SQL("grant usage on schema {} to {}").format(schema, role_id))
                conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(schema, role_id))
                conn.execute(sql.SQL(
                    "alter default privileges for role current_user in schema {} grant select on tables to {}"
                ).format(schema, role_id))
    except psycopg.OperationalError as exc:
        raise SupersetError(f"cannot reach the marts' database: {exc}") from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise SupersetError(
            f"cannot set up the read-only role {role!r} ({exc.diag.message_primary}); the database user "
            "needs CREATEROLE, or create the role yourself and set BAGULA_SUPERSET_READER_PASSWORD"
        ) from None


def superset_env(superset: Superset) -> dict[str, str]:
    """What superset_config.py reads; the same for the web server and bootstrap.py."""
    return {
        "SUPERSET_CONFIG_PATH": str(SUPERSET_DIR / "superset_config.py"),
        "BAGULA_SUPERSET_SECRET_KEY": secret_key(superset),
        "BAGULA_SUPERSET_METADATA_DB_URL": metadata_db_url(superset),
        "BAGULA_SUPERSET_ADMIN_USERNAME": superset.settings.admin_username,
        # Superset's venv must not pick up user site packages, nor examples.
        "PYTHONNOUSERSITE": "1",
        "SUPERSET_LOAD_EXAMPLES": "no",
    }


def projects(database_url: str) -> list[dict[str, str]]:
    """Every project ({"id", "name"}), for the per-project roles; none before the schema exists."""
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            rows = conn.execute("select project_id, name from projects order by name").fetchall()
    except psycopg.errors.UndefinedTable:
        return []
    except psycopg.OperationalError as exc:
        raise SupersetError(f"cannot reach the database: {exc}") from None
    return [{"id": str(project_id), "name": name} for project_id, name in rows]


def _project_lines(summary: dict) -> list[str]:
    roles = summary["roles"]
    if not roles:
        return ["  project roles    none yet (one per project, made when the project's first key is)"]
    shown = ", ".join(repr(r) for r in roles[:4]) + (f" and {len(roles) - 4} more" if len(roles) > 4 else "")
    made = f"; updated {', '.join(repr(r) for r in summary['changed'])}" if summary["changed"] else ""
    return [f"  project roles    {shown}: each sees its project only, in all {summary['datasets']} datasets{made}"]


def run_bootstrap(superset: Superset, command: str, assets_dir: Path, extra_env: dict[str, str]) -> dict:
    """superset/bootstrap.py in Superset's environment; its JSON summary."""
    python = superset_python(superset)
    superset.home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **superset_env(superset), **extra_env}
    result = subprocess.run(
        [str(python), str(SUPERSET_DIR / "bootstrap.py"), command, str(assets_dir)],
        env=env, cwd=superset.home, capture_output=True, text=True,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise SupersetError(f"superset {command} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(lines[-1])


def prepare_superset(superset: Superset, database_url: str) -> list[str]:
    """What `bagula superset init` does; returns the lines to show (a new admin password once).

    Upgrades Superset's metadata database, creates its roles and the admin, sets up the
    read-only role, imports the database connection, datasets, charts and dashboards
    from superset/assets, and gives every project its role (row-level security on
    project_id for every dataset). Running it again changes nothing.
    """
    settings = superset.settings
    role = settings.reader_role
    password = reader_password(superset)
    ensure_reader_role(database_url, role, password)
    extra_env = {
        "BAGULA_SUPERSET_MARTS_URI": marts_sqlalchemy_uri(database_url, role),
        "BAGULA_SUPERSET_MARTS_PASSWORD": password,
        "BAGULA_SUPERSET_PROJECTS": json.dumps(projects(database_url)),
    }
    new_admin_password = None
    if settings.admin_password:
        extra_env["BAGULA_SUPERSET_ADMIN_PASSWORD"] = settings.admin_password.get_secret_value()
    else:
        # Used only if the admin does not exist yet; never stored.
        new_admin_password = secrets.token_urlsafe(16)
        extra_env["BAGULA_SUPERSET_NEW_ADMIN_PASSWORD"] = new_admin_password
    summary = run_bootstrap(superset, "init", ASSETS_DIR, extra_env)

    base = f"http://{settings.host}:{settings.port}"
    assets = "imported from superset/assets" if summary["assets"] == "imported" else "as in superset/assets"
    lines = [
        f"  Superset         {base}",
        f"  dashboards       {', '.join(d['title'] for d in summary['dashboards'])} ({assets}; "
        f"marts read as {role!r})",
    ]
    admin = summary["admin_username"]
    if summary["admin"] == "created" and new_admin_password:
        lines.append(f"  Superset admin   {admin!r}, password (shown once): {new_admin_password}")
    elif summary["admin"] == "created":
        lines.append(f"  Superset admin   {admin!r} created with BAGULA_SUPERSET_ADMIN_PASSWORD")
    elif summary["admin"] == "password reset":
        lines.append(f"  Superset admin   {admin!r}: password reset to BAGULA_SUPERSET_ADMIN_PASSWORD")
    else:
        lines.append(f"  Superset admin   {admin!r} (a lost password: set BAGULA_SUPERSET_ADMIN_PASSWORD, run init)")
    return lines + _project_lines(summary["projects"])


def superset_ready(superset: Superset) -> bool:
    """Whether Superset is set up where this command runs (its environment, an initialised
    metadata database): then a new project can get its role here and now."""
    try:
        superset_python(superset)
    except SupersetError:
        return False
    metadata = metadata_db_url(superset)
    return not metadata.startswith("sqlite:///") or Path(metadata[len("sqlite:///"):]).exists()


def sync_projects(superset: Superset, database_url: str) -> list[str]:
    """What `bagula superset sync-projects` does: a role with row-level security for every
    project (new projects get theirs, the others are left as they are); lines to show."""
    summary = run_bootstrap(superset, "sync-projects", ASSETS_DIR,
                            {"BAGULA_SUPERSET_PROJECTS": json.dumps(projects(database_url))})
    return _project_lines(summary["projects"])


def superset_serve_command(superset: Superset, port: int) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment of a child process serving Superset on the port (the
    marts' connection is stored by prepare_superset: serving needs no database URL)."""
    python = superset_python(superset)
    metadata = metadata_db_url(superset)
    if metadata.startswith("sqlite:///") and not Path(metadata[len("sqlite:///"):]).exists():
        raise SupersetError("Superset's metadata database does not exist yet: run `bagula superset init` first")
    superset.home.mkdir(parents=True, exist_ok=True)
    settings = superset.settings
    argv = [
        str(python.parent / "gunicorn"),
        "--bind", f"{settings.host}:{port}",
        "--workers", str(settings.workers),
        "--worker-class", "gthread", "--threads", str(settings.threads),
        "--timeout", "120",
        "--limit-request-line", "0", "--limit-request-field_size", "0",
        # Not the source tree: its superset/ folder must never stand in for the package.
        "--chdir", str(superset.home),
        "superset.app:create_app()",
    ]
    return argv, superset_env(superset)
