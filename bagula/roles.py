"""Least-privilege PostgreSQL roles, one per service (`bagula db roles`; docs/deployment.md).

The owner (the role `bagula db roles` connects as) owns the schema and runs the migrations;
nothing else connects as it. Each service has a login role of its own:

- ``bagula_ingest``: the API. Writes the raw tables (sessions, spans); reads keys, marts and
  verdicts; resolves verdicts, acknowledges and resolves incidents, pins baselines, manages alert
  routes and data policies; erases sessions on request (raw rows, marts rows, verdicts).
- ``bagula_transform``: dbt, detection and the live path (Dagster's code: its sensor and runs;
  `bagula pipeline live`). Owns the schemas staging, intermediate and marts; reads the raw tables;
  writes verdicts, incidents, baselines, models, alerts; deletes what retention says is past its time.
- ``bagula_dagster``: Dagster's run and event storage. Owns the schema ``dagster``, sees nothing else.
- ``bagula_superset_reader``: Superset's dashboards. The marts only, read-only (as `bagula superset
  init` makes it).
- ``bagula_superset``: owns Superset's own metadata database (optional).

New tables get their privileges two ways. What dbt creates (every full refresh creates the
marts anew) gets them from default privileges of ``bagula_transform``. What a migration
creates in ``public`` gets them from ``TABLE_PRIVILEGES`` below, applied by `bagula db roles`
after every `bagula db upgrade` (`bagula db init --roles` does both): a migration that adds
a table adds a line there, and tests/deploy/test_roles.py fails until it does. Until then
the owner's default privileges let ``bagula_transform`` read it (dbt may use it as a source)
and nobody write it.

Everything here is done as the database's owner with CREATEROLE (and CREATEDB for Superset's
metadata database), not as a superuser: a managed database's owner can run it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bagula.settings import SupersetSettings

INGEST = "bagula_ingest"
TRANSFORM = "bagula_transform"
DAGSTER = "bagula_dagster"
SUPERSET = "bagula_superset"
SUPERSET_DATABASE = "bagula_superset"

DBT_SCHEMAS = ("staging", "intermediate", "marts")
MARTS = "marts"
DAGSTER_SCHEMA = "dagster"
# The raw tables: the API stores sessions and erases them on request (ingest_api/store/erasure.py);
# dbt and detection read them, quarantine negates ingest_txid (orchestration/quarantine.py), and
# the live path's retention deletes what is past its time (ingest_api/store/retention.py).
RAW_INGEST = "select, insert, delete"
RAW_TRANSFORM = "select, delete, update (ingest_txid)"
# Verdicts: detection writes and groups them, retention deletes old ones; users resolve them
# through the API, and erasure deletes a session's.
VERDICTS_INGEST = "select, update, delete"
VERDICTS_TRANSFORM = "select, insert, update, delete"

# Privileges on every table of schema public, by role; the owner keeps all of them. A column
# list ("update (ingest_txid)") becomes the whole table's on a compressed TimescaleDB hypertable
# (see _grantable).
TABLE_PRIVILEGES: dict[str, dict[str, str]] = {
    "alembic_version": {},
    "projects": {INGEST: "select", TRANSFORM: "select"},
    # Keys are made and revoked from the command line (the owner); the API records their use.
    "api_keys": {INGEST: "select, update (last_used_at)"},
    # Erasure leaves a tombstone (erased_at) in the ledger.
    "session_ledger": {INGEST: "select, insert, update (erased_at)", TRANSFORM: "select"},
    "agent_sessions": {INGEST: RAW_INGEST, TRANSFORM: RAW_TRANSFORM},
    "session_turns": {INGEST: RAW_INGEST, TRANSFORM: RAW_TRANSFORM},
    "llm_calls": {INGEST: RAW_INGEST, TRANSFORM: RAW_TRANSFORM},
    "tool_calls": {INGEST: RAW_INGEST, TRANSFORM: RAW_TRANSFORM},
    # Kept by the ingest transaction; recounted (bagula_recount_agents) after erasure and retention.
    "agent_session_counts": {INGEST: "select, insert, update, delete", TRANSFORM: "select, insert, delete"},
    # OpenTelemetry (0006): the API lands spans and its assembler makes sessions of them.
    "otlp_spans": {INGEST: "select, insert, delete", TRANSFORM: "select, delete"},
    "otlp_traces": {INGEST: "select, insert, update, delete", TRANSFORM: "select, delete"},
    "otlp_sessions": {INGEST: "select, insert, delete", TRANSFORM: "select, delete"},
    # Negotiated rates: set from the command line (the owner).
    "project_prices": {INGEST: "select", TRANSFORM: "select"},
    # Pinning a baseline deactivates the agent's previous one; erasure unlinks a session.
    "baselines": {INGEST: "select, insert, update", TRANSFORM: "select, insert, update"},
    "anomalies": {INGEST: VERDICTS_INGEST, TRANSFORM: VERDICTS_TRANSFORM},
    "regressions": {INGEST: VERDICTS_INGEST, TRANSFORM: VERDICTS_TRANSFORM},
    "detection_models": {TRANSFORM: "select, insert, delete"},
    # Incidents (0007): detection groups verdicts into them; the API lists, acknowledges and
    # resolves them by hand (an incident event, alerted by bagula_alert_incident_event, which
    # runs as its caller).
    "incidents": {INGEST: "select, update", TRANSFORM: VERDICTS_TRANSFORM},
    "incident_members": {INGEST: "select, delete", TRANSFORM: "select, insert, delete"},
    "incident_events": {INGEST: "select, insert, update", TRANSFORM: "select, insert, update, delete"},
    "alerts": {INGEST: "select, insert, update, delete", TRANSFORM: VERDICTS_TRANSFORM},
    # Per-project webhooks: managed through the API (and the command line); delivery reads them.
    "alert_routes": {INGEST: "select, insert, update, delete", TRANSFORM: "select"},
    # A new route lifts its project's delivery pause.
    "alert_delivery": {INGEST: "select, delete", TRANSFORM: "select, insert, update"},
    "pipeline_watermarks": {TRANSFORM: "select, insert, update"},
    "quarantined_batches": {TRANSFORM: "select, insert, update"},
    # Lifecycle (0008): policies set through the API, applied by the live path's retention;
    # erasures audited by the API that performs them.
    "project_data_policies": {INGEST: "select, insert, update", TRANSFORM: "select"},
    "erasures": {INGEST: "select, insert"},
    "retention_runs": {INGEST: "select", TRANSFORM: "select, insert, update"},
}


class RolePasswords(BaseSettings):
    """The service roles' passwords (``BAGULA_DB_INGEST_PASSWORD``, ...); the read-only
    Superset role's is ``BAGULA_SUPERSET_READER_PASSWORD``. Use URL-safe passwords: they go
    into the services' database URLs as they are."""

    model_config = SettingsConfigDict(env_prefix="BAGULA_DB_", extra="ignore")

    ingest_password: SecretStr | None = None
    transform_password: SecretStr | None = None
    dagster_password: SecretStr | None = None
    # Unset: no Superset metadata database here (BAGULA_SUPERSET_METADATA_DB_URL points elsewhere).
    superset_password: SecretStr | None = None


class RolesError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServiceRole:
    name: str
    password: str


def _required(passwords: RolePasswords, superset: SupersetSettings) -> tuple[list[ServiceRole], str]:
    given = {
        INGEST: passwords.ingest_password,
        TRANSFORM: passwords.transform_password,
        DAGSTER: passwords.dagster_password,
    }
    missing = [f"BAGULA_DB_{role.removeprefix('bagula_').upper()}_PASSWORD" for role, pw in given.items() if not pw]
    if superset.reader_password is None:
        missing.append("BAGULA_SUPERSET_READER_PASSWORD")
    if missing:
        raise RolesError(f"set {', '.join(missing)} (each role's password; URL-safe)")
    services = [ServiceRole(role, pw.get_secret_value()) for role, pw in given.items()]
    return services, superset.reader_password.get_secret_value()


def _login_role(conn: psycopg.Connection, role: ServiceRole) -> None:
    """A login role with the password given. New roles get PostgreSQL's defaults (no superuser,
    replication or RLS bypass); naming those here would take a superuser, which a managed
    database's owner is not."""
    name = sql.Identifier(role.name)
    if not conn.execute("select 1 from pg_roles where rolname = %s", (role.name,)).fetchone():
        conn.execute(sql.SQL("create role {} login").format(name))
    # Setting the password every time is what rotating one takes: change it, rerun.
    conn.execute(
        sql.SQL("alter role {} with login password {} nocreatedb nocreaterole").format(name, sql.Literal(role.password))
    )


def _reader_role(conn: psycopg.Connection, role: ServiceRole) -> None:
    """Superset's role as `bagula superset init` makes it (bagula.superset.ensure_reader_role):
    the marts only, read-only transactions, a statement timeout; here without the attributes
    only a superuser may set."""
    _login_role(conn, role)
    name, marts = sql.Identifier(role.name), sql.Identifier(MARTS)
    conn.execute(sql.SQL("alter role {} noinherit").format(name))
    conn.execute(sql.SQL("alter role {} set default_transaction_read_only = on").format(name))
    conn.execute(sql.SQL("alter role {} set search_path = {}").format(name, marts))
    conn.execute(sql.SQL("alter role {} set statement_timeout = '120s'").format(name))
    conn.execute(sql.SQL("alter role {} set jit = off").format(name))  # as ensure_reader_role, why there


def _relations(conn: psycopg.Connection, schema: str) -> list[tuple[str, str, str]]:
    """(name, kind, owner) of the tables, views and sequences in a schema."""
    return conn.execute(
        """
        select c.relname, c.relkind, pg_get_userbyid(c.relowner)
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %s and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
        order by c.relname
        """,
        (schema,),
    ).fetchall()


ALTER = {"r": "table", "p": "table", "f": "foreign table", "v": "view", "m": "materialized view", "S": "sequence"}


def _own_schema(conn: psycopg.Connection, schema: str, owner: str) -> None:
    """The schema and everything in it owned by ``owner`` (dbt and Dagster replace their own
    tables; an installation that ran as one role before gets its objects handed over)."""
    conn.execute(
        sql.SQL("create schema if not exists {} authorization {}").format(sql.Identifier(schema), sql.Identifier(owner))
    )
    conn.execute(sql.SQL("alter schema {} owner to {}").format(sql.Identifier(schema), sql.Identifier(owner)))
    for name, kind, current in _relations(conn, schema):
        # Sequences owned by a column move with their table.
        if current != owner and not (kind == "S" and _owned_by_column(conn, schema, name)):
            conn.execute(
                sql.SQL("alter {} {} owner to {}").format(
                    sql.SQL(ALTER[kind]), sql.Identifier(schema, name), sql.Identifier(owner)
                )
            )


def _owned_by_column(conn: psycopg.Connection, schema: str, sequence: str) -> bool:
    return bool(
        conn.execute(
            """
        select 1 from pg_depend d join pg_class c on c.oid = d.objid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %s and c.relname = %s and d.deptype in ('a', 'i') and d.refobjsubid > 0
        """,
            (schema, sequence),
        ).fetchone()
    )


def undeclared_tables(conn: psycopg.Connection) -> list[str]:
    """Tables in schema public whose privileges TABLE_PRIVILEGES does not decide."""
    return [name for name, kind, _ in _relations(conn, "public") if kind in "rpf" and name not in TABLE_PRIVILEGES]


def compressed_hypertables(conn: psycopg.Connection) -> set[str]:
    """Hypertables of schema public with TimescaleDB compression enabled (none without TimescaleDB)."""
    if not conn.execute("select 1 from pg_extension where extname = 'timescaledb'").fetchone():
        return set()
    return {
        name
        for (name,) in conn.execute(
            "select hypertable_name from timescaledb_information.hypertables"
            " where hypertable_schema = 'public' and compression_enabled"
        )
    }


_COLUMN_LIST = re.compile(r"\s*\([^)]*\)")


def _grantable(privileges: str, compressed: bool) -> str:
    """TimescaleDB passes a hypertable's grants on to its internal compressed table, which has
    none of its columns: a column list fails there, so on a compressed hypertable the privilege
    is the whole table's (only the owner could grant around it)."""
    return _COLUMN_LIST.sub("", privileges) if compressed else privileges


def _table_privileges(conn: psycopg.Connection, services: list[str]) -> set[str]:
    """Exactly the declared privileges on the tables that exist (an older schema lacks some),
    in one transaction: a running service never sees a table without its grants. Returns the
    compressed hypertables, whose column privileges became table-wide."""
    existing = {name for name, kind, _ in _relations(conn, "public") if kind in "rpf"}
    compressed = compressed_hypertables(conn)
    with conn.transaction():
        for table, grants in TABLE_PRIVILEGES.items():
            if table not in existing:
                continue
            target = sql.Identifier(table)
            conn.execute(
                sql.SQL("revoke all on table {} from {}").format(
                    target, sql.SQL(", ").join(map(sql.Identifier, services))
                )
            )
            for role, privileges in grants.items():
                conn.execute(
                    sql.SQL("grant {} on table {} to {}").format(
                        sql.SQL(_grantable(privileges, table in compressed)), target, sql.Identifier(role)
                    )
                )
    return compressed & {table for table, grants in TABLE_PRIVILEGES.items() if "(" in "".join(grants.values())}


def _superset_metadata(conn: psycopg.Connection, password: str) -> None:
    _login_role(conn, ServiceRole(SUPERSET, password))
    # Creating a database for another owner takes membership in that role.
    conn.execute(sql.SQL("grant {} to current_user").format(sql.Identifier(SUPERSET)))
    if not conn.execute("select 1 from pg_database where datname = %s", (SUPERSET_DATABASE,)).fetchone():
        conn.execute(
            sql.SQL("create database {} owner {}").format(sql.Identifier(SUPERSET_DATABASE), sql.Identifier(SUPERSET))
        )
    conn.execute(sql.SQL("revoke all on database {} from public").format(sql.Identifier(SUPERSET_DATABASE)))
    conn.execute(
        sql.SQL("grant connect, temporary on database {} to {}").format(
            sql.Identifier(SUPERSET_DATABASE), sql.Identifier(SUPERSET)
        )
    )


def ensure_roles(owner_url: str, passwords: RolePasswords, superset: SupersetSettings) -> list[str]:
    """Create or update every service role and its privileges; idempotent. Returns what to show."""
    services, reader_password = _required(passwords, superset)
    names = [role.name for role in services]
    reader = superset.reader_role
    try:
        with psycopg.connect(owner_url, autocommit=True) as conn:
            database = conn.execute("select current_database()").fetchone()[0]
            db = sql.Identifier(database)
            for role in services:
                _login_role(conn, role)
            _reader_role(conn, ServiceRole(reader, reader_password))
            # The owner hands its objects over and sets the default privileges of the roles
            # that create tables: both need membership.
            for role in (TRANSFORM, DAGSTER):
                conn.execute(sql.SQL("grant {} to current_user").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("alter role {} set search_path = {}").format(
                    sql.Identifier(DAGSTER), sql.Identifier(DAGSTER_SCHEMA)
                )
            )

            # Only the roles granted below may connect; the API stages spans and detection its
            # verdicts in temporary tables.
            conn.execute(sql.SQL("revoke all on database {} from public").format(db))
            conn.execute(
                sql.SQL("grant connect on database {} to {}").format(
                    db, sql.SQL(", ").join(map(sql.Identifier, [*names, reader]))
                )
            )
            conn.execute(
                sql.SQL("grant temporary on database {} to {}, {}").format(
                    db, sql.Identifier(INGEST), sql.Identifier(TRANSFORM)
                )
            )
            conn.execute("revoke create on schema public from public")
            conn.execute(
                sql.SQL("grant usage on schema public to {}, {}").format(
                    sql.Identifier(INGEST), sql.Identifier(TRANSFORM)
                )
            )

            widened = _table_privileges(conn, [*names, reader])
            conn.execute(
                sql.SQL("alter default privileges in schema public grant select on tables to {}").format(
                    sql.Identifier(TRANSFORM)
                )
            )

            for schema in DBT_SCHEMAS:
                _own_schema(conn, schema, TRANSFORM)
            _own_schema(conn, DAGSTER_SCHEMA, DAGSTER)
            conn.execute(sql.SQL("revoke all on schema {} from public").format(sql.Identifier(DAGSTER_SCHEMA)))

            # The marts dbt writes as bagula_transform: readable by the API and by Superset; the
            # API also deletes an erased session's rows from them.
            marts = sql.Identifier(MARTS)
            for role, privileges in ((INGEST, "select, delete"), (reader, "select")):
                conn.execute(sql.SQL("grant usage on schema {} to {}").format(marts, sql.Identifier(role)))
                conn.execute(
                    sql.SQL("grant {} on all tables in schema {} to {}").format(
                        sql.SQL(privileges), marts, sql.Identifier(role)
                    )
                )
                conn.execute(
                    sql.SQL("alter default privileges for role {} in schema {} grant {} on tables to {}").format(
                        sql.Identifier(TRANSFORM), marts, sql.SQL(privileges), sql.Identifier(role)
                    )
                )
            if passwords.superset_password is not None:
                _superset_metadata(conn, passwords.superset_password.get_secret_value())
            undeclared = undeclared_tables(conn)
    except psycopg.OperationalError as exc:
        raise RolesError(f"cannot reach the database: {exc}") from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise RolesError(
            f"not allowed ({exc.diag.message_primary}): run `bagula db roles` as the database's "
            "owner, with CREATEROLE (and CREATEDB for Superset's metadata database)"
        ) from None

    lines = [
        f"role {INGEST}: the API (raw tables, spans: insert; keys, marts, verdicts, incidents: read; erasure)",
        f"role {TRANSFORM}: dbt, detection and the live path (owns {', '.join(DBT_SCHEMAS)}; verdicts, "
        "incidents, alerts: write; retention)",
        f"role {DAGSTER}: Dagster's storage (owns schema {DAGSTER_SCHEMA})",
        f"role {reader}: Superset's dashboards (marts: read only)",
    ]
    if passwords.superset_password is not None:
        lines.append(f"role {SUPERSET}: owns Superset's metadata database {SUPERSET_DATABASE}")
    if widened:
        lines.append(
            f"note: {', '.join(sorted(widened))} are compressed hypertables: their column privileges "
            "are table-wide (TimescaleDB)"
        )
    if undeclared:
        lines.append(
            f"warning: no privileges declared for {', '.join(undeclared)} (bagula/roles.py): only the owner writes them"
        )
    return lines
