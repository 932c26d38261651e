"""`bagula db roles`: one least-privilege login role per service. Each can do its service's work
(the API as deployed, serving its endpoints as its role; detection's and retention's writes) and
nothing else; tables created later (a migration's, dbt's) get the right privileges; running it
again changes nothing but what changed (a rotated password); an installation that ran as one role
is handed over."""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from bagula.roles import (
    DAGSTER,
    DBT_SCHEMAS,
    INGEST,
    SUPERSET,
    SUPERSET_DATABASE,
    TABLE_PRIVILEGES,
    TRANSFORM,
    compressed_hypertables,
    undeclared_tables,
)
from ingest_api import db
from ingest_api.store import keys, retention
from simulator.samples import make_batch
from tests.deploy.checks import REPO
from tests.deploy.conftest import ROLE_ENV, ROLE_PASSWORDS, as_role, new_database
from tests.support.cli import bagula
from tests.support.services import ApiServer, remove_cluster, start_cluster, wait_for

READER = "bagula_superset_reader"


def _roles(url: str, **env: str):
    result = bagula(url, "db", "roles", **{**ROLE_ENV, **env})
    assert result.returncode == 0, result.stderr
    return result


def _can(url: str, statement: str) -> bool:
    """Whether the statement runs (rolled back either way)."""
    with psycopg.connect(url) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return False
        finally:
            conn.rollback()
    return True


def _grants(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """
            select grantee, table_schema, table_name, privilege_type from information_schema.role_table_grants
            where grantee like 'bagula\\_%' order by 1, 2, 3, 4
            """
        ).fetchall()


@pytest.fixture(scope="module")
def database(pg) -> str:
    url = new_database(pg, "roles")
    # Before the roles, as a one-role installation left it: marts built by the owner.
    with psycopg.connect(url) as conn:
        conn.execute("create schema marts; create table marts.fct_sessions (project_id uuid, session_id uuid)")
    _roles(url)
    return url


def test_every_table_of_the_schema_has_its_privileges_declared(database: str):
    with psycopg.connect(database) as conn:
        assert undeclared_tables(conn) == []
        tables = {row[0] for row in conn.execute("select tablename from pg_tables where schemaname = 'public'")}
    # ... and nothing is declared that no migration makes.
    assert set(TABLE_PRIVILEGES) == tables


def _schemas(config: dict) -> set[str]:
    found = {config["+schema"]} if "+schema" in config else set()
    for value in config.values():
        if isinstance(value, dict):
            found |= _schemas(value)
    return found


def test_every_schema_dbt_builds_into_belongs_to_the_transform_role():
    project = yaml.safe_load((REPO / "dbt_project" / "dbt_project.yml").read_text())
    assert _schemas(project["models"]) <= set(DBT_SCHEMAS)


def test_the_api_writes_raw_rows_and_reads_what_it_serves_nothing_more(database: str):
    api = as_role(database, INGEST)
    assert _can(
        api, "insert into session_ledger (project_id, session_id) values (gen_random_uuid(), gen_random_uuid())"
    )
    assert _can(api, "select key_id from api_keys where key_hash = '\\x00'")
    assert _can(api, "select * from marts.fct_sessions")
    assert _can(api, "update anomalies set resolved = true where false")
    assert not _can(api, "update agent_sessions set agent_name = 'x' where false")
    assert not _can(api, "update agent_sessions set ingest_txid = 0 where false")
    assert not _can(api, "truncate session_turns")
    assert not _can(api, "update session_ledger set session_id = gen_random_uuid() where false")
    assert not _can(api, "insert into incidents select * from incidents where false")
    assert not _can(api, "select * from pipeline_watermarks")
    assert not _can(api, "insert into marts.fct_sessions select * from marts.fct_sessions where false")
    assert not _can(
        api, "insert into api_keys (project_id, key_hash, key_prefix) values (gen_random_uuid(), '\\x00', 'x')"
    )
    assert not _can(api, "select * from detection_models")
    assert not _can(api, "select * from quarantined_batches")
    assert not _can(api, "create table public.mine (x int)")
    assert not _can(api, "select * from dagster.alembic_version")


def test_dbt_and_detection_own_the_marts_and_write_verdicts_but_never_ingest(database: str):
    transform = as_role(database, TRANSFORM)
    assert _can(transform, "create table marts.new_mart (x int)")
    assert _can(transform, "create table staging.new_view_stand_in (x int)")
    assert _can(transform, "drop table marts.fct_sessions")  # a full refresh replaces its tables
    assert _can(transform, "select bagula_watermark()")
    assert _can(transform, "select count(*) from agent_sessions join projects using (project_id)")
    assert _can(transform, "update alerts set attempts = attempts + 1 where false")
    assert _can(transform, "update agent_sessions set ingest_txid = -ingest_txid where false")  # quarantine
    assert _can(transform, "update session_turns set ingest_txid = -ingest_txid where false")
    assert _can(transform, "create temporary table verdicts_batch (x int)")
    assert not _can(
        transform, "insert into session_ledger (project_id, session_id) values (gen_random_uuid(), gen_random_uuid())"
    )
    assert not _can(transform, "insert into otlp_spans (project_id) select project_id from otlp_spans where false")
    # Column privileges hold where TimescaleDB lets them (below: on a plain PostgreSQL, on every table).
    assert not _can(transform, "update session_turns set turn_number = 0 where false")
    assert not _can(transform, "update alert_routes set webhook_url = 'x' where false")
    assert not _can(transform, "select * from api_keys")
    assert not _can(transform, "select * from dagster.alembic_version")


@pytest.mark.timescaledb
def test_on_timescaledb_column_privileges_are_table_wide_only_on_compressed_hypertables(database: str):
    if not db.hypertables(database):
        pytest.skip(f"TimescaleDB is not usable on this server ({db.timescaledb_status(database)})")
    with psycopg.connect(database) as conn:
        compressed = compressed_hypertables(conn)
    assert compressed == {"agent_sessions", "llm_calls"}
    assert _can(as_role(database, TRANSFORM), "update agent_sessions set agent_name = 'x' where false")
    assert "are table-wide (TimescaleDB)" in _roles(database).stderr


def test_dagsters_storage_sees_its_schema_only(database: str):
    storage = as_role(database, DAGSTER)
    with psycopg.connect(storage) as conn:
        assert conn.execute("show search_path").fetchone()[0] == "dagster"
    assert _can(storage, "create table runs_stand_in (x int)")
    assert not _can(storage, "select * from public.agent_sessions")
    assert not _can(storage, "select * from marts.fct_sessions")


def test_tables_made_later_get_their_privileges(database: str):
    # dbt, as bagula_transform, makes a mart: the API and Superset read it, without a new grant.
    with psycopg.connect(as_role(database, TRANSFORM)) as conn:
        conn.execute("create table marts.agg_later (x int)")
    assert _can(as_role(database, INGEST), "select * from marts.agg_later")
    assert _can(as_role(database, READER), "select * from marts.agg_later")
    # A migration, as the owner, adds a table: detection may read it; nobody else, until declared.
    with psycopg.connect(database) as conn:
        conn.execute("create table later_feature (x int)")
    assert _can(as_role(database, TRANSFORM), "select * from later_feature")
    assert not _can(as_role(database, INGEST), "select * from later_feature")
    warned = _roles(database).stderr
    assert "no privileges declared for later_feature" in warned
    with psycopg.connect(database) as conn:
        conn.execute("drop table later_feature")


def test_a_one_role_installation_is_handed_over(database: str):
    with psycopg.connect(database) as conn:
        owners = dict(
            conn.execute(
                "select nspname, pg_get_userbyid(nspowner) from pg_namespace "
                "where nspname in ('staging', 'intermediate', 'marts', 'dagster')"
            )
        )
    assert owners == {"staging": TRANSFORM, "intermediate": TRANSFORM, "marts": TRANSFORM, "dagster": DAGSTER}


def test_superset_gets_its_metadata_database_and_reads_the_marts_only(database: str):
    metadata = as_role(database, SUPERSET).rsplit("/", 1)[0] + f"/{SUPERSET_DATABASE}"
    assert _can(metadata, "create table ab_user_stand_in (x int)")
    reader = as_role(database, READER)
    assert _can(reader, "select * from marts.fct_sessions")
    for table in ("agent_sessions", "otlp_spans", "incidents", "alert_routes", "api_keys"):
        assert not _can(reader, f"select * from public.{table}"), table
    # Read-only, even on the marts (its role says so, and it holds no write privilege).
    with psycopg.connect(reader) as conn:
        assert conn.execute("show jit").fetchone()[0] == "off"  # as `bagula superset init` makes the role
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)):
            conn.execute("delete from marts.fct_sessions")


def test_running_again_changes_nothing_but_a_rotated_password(database: str):
    before = _grants(database)
    _roles(database)
    assert _grants(database) == before
    _roles(database, BAGULA_DB_INGEST_PASSWORD="ingest-pw-2")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(as_role(database, INGEST)).close()
    rotated = as_role(database, INGEST).replace(ROLE_PASSWORDS[INGEST], "ingest-pw-2")
    psycopg.connect(rotated).close()
    _roles(database)
    assert _grants(database) == before


def test_it_names_what_is_missing(database: str):
    result = bagula(database, "db", "roles", BAGULA_DB_INGEST_PASSWORD="x")
    assert result.returncode != 0
    for name in ("BAGULA_DB_TRANSFORM_PASSWORD", "BAGULA_DB_DAGSTER_PASSWORD", "BAGULA_SUPERSET_READER_PASSWORD"):
        assert name in result.stderr


def test_a_managed_databases_owner_without_superuser_sets_it_all_up():
    """A managed PostgreSQL gives its admin CREATEROLE and CREATEDB, never superuser: init, roles
    and Superset's metadata database work as that admin, on a fresh server."""
    cluster = start_cluster()
    try:
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("create role provider_admin login password 'admin-pw' createrole createdb")
            # Providers' admin roles usually include pg_monitor; `bagula db upgrade` reads
            # shared_preload_libraries, which takes it (pg_read_all_settings).
            conn.execute("grant pg_monitor to provider_admin")
            conn.execute("create database managed owner provider_admin")
        admin = cluster.url("managed").replace(f"{cluster.user}:", "provider_admin:", 1)
        admin = re.sub(r"provider_admin:[^@]*@", "provider_admin:admin-pw@", admin)
        with psycopg.connect(admin) as conn:
            assert conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()[0] is False

        init = bagula(admin, "db", "init", "--roles", BAGULA_TIMESCALEDB="off", **ROLE_ENV)
        assert init.returncode == 0, init.stderr
        assert init.stdout.strip().splitlines()[-1].startswith("bgl_")
        api = as_role(admin, INGEST)
        assert _can(
            api, "insert into session_ledger (project_id, session_id) values (gen_random_uuid(), gen_random_uuid())"
        )
        assert not _can(api, "update agent_sessions set agent_name = 'x' where false")
        # On plain PostgreSQL the column privileges hold on every table.
        assert not _can(as_role(admin, TRANSFORM), "update agent_sessions set agent_name = 'x' where false")
        assert _can(as_role(admin, TRANSFORM), "update agent_sessions set ingest_txid = -ingest_txid where false")
        metadata = as_role(admin, SUPERSET).rsplit("/", 1)[0] + f"/{SUPERSET_DATABASE}"
        assert _can(metadata, "create table ab_user_stand_in (x int)")
        assert bagula(admin, "db", "roles", **ROLE_ENV).returncode == 0
    finally:
        remove_cluster(cluster)


def _otlp_export(trace_id: str, start_ns: int) -> bytes:
    """An OTLP/JSON export of one agent run: an invoke_agent span and its chat span."""

    def attributes(**values: object) -> list[dict]:
        return [
            {"key": k.replace("__", "."), "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
            for k, v in values.items()
        ]

    root, chat = "1" * 16, "2" * 16
    spans = [
        {
            "traceId": trace_id,
            "spanId": root,
            "name": "invoke_agent",
            "kind": 1,
            "startTimeUnixNano": str(start_ns),
            "endTimeUnixNano": str(start_ns + 2_000_000_000),
            "attributes": attributes(gen_ai__operation__name="invoke_agent", gen_ai__agent__name="order-bot"),
            "status": {},
        },
        {
            "traceId": trace_id,
            "spanId": chat,
            "parentSpanId": root,
            "name": "chat",
            "kind": 3,
            "startTimeUnixNano": str(start_ns + 100_000_000),
            "endTimeUnixNano": str(start_ns + 900_000_000),
            "attributes": attributes(
                gen_ai__operation__name="chat",
                gen_ai__provider__name="openai",
                gen_ai__request__model="gpt-4o-mini",
                gen_ai__usage__input_tokens=100,
                gen_ai__usage__output_tokens=10,
            ),
            "status": {},
        },
    ]
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": attributes(service__name="roles")},
                    "scopeSpans": [{"scope": {"name": "roles"}, "spans": spans}],
                }
            ]
        }
    ).encode()


def _rows(url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def _incident(transform: str, project_id: uuid.UUID, session_id: str) -> uuid.UUID:
    """An open incident as detection's grouping writes one, as bagula_transform: the incident, a
    member, its opening event, alerted (bagula_alert_incident_event), and the grouping watermark."""
    incident, event, now = uuid.uuid4(), uuid.uuid4(), datetime.now(timezone.utc)
    with psycopg.connect(transform) as conn:
        conn.execute(
            "insert into incidents (incident_id, project_id, agent_name, kind, status, first_seen, last_seen, opened_at,"
            " opened_severity, peak_severity, current_severity, affected_sessions, span_sessions, verdict_count,"
            " summary, example_session_ids) values (%s, %s, 'customer-support-agent', 'error_burst', 'open', %s, %s,"
            " %s, 'critical', 'critical', 'critical', 1, 1, 1, 'errors', array[%s::uuid])"
            " on conflict (incident_id) do update set last_seen = excluded.last_seen",
            (incident, project_id, now, now, now, session_id),
        )
        conn.execute(
            "insert into incident_members values (%s, %s, 'customer-support-agent', %s, 'error_burst', %s, 'critical')",
            (incident, project_id, session_id, now),
        )
        conn.execute(
            "insert into incident_events (event_id, incident_id, project_id, agent_name, kind, event,"
            " severity, at, summary, affected_sessions, example_session_ids) values (%s, %s, %s,"
            " 'customer-support-agent', 'error_burst', 'opened', 'critical', %s, 'errors', 1, array[%s::uuid])",
            (event, incident, project_id, now, session_id),
        )
        assert conn.execute("select bagula_alert_incident_event(%s, 'critical')", (event,)).fetchone()[0] is True
        conn.execute(
            "insert into pipeline_watermarks (name, watermark) values (%s, 1)"
            " on conflict (name) do update set watermark = excluded.watermark",
            (f"incidents:{project_id}",),
        )
        conn.execute("update anomalies set grouped_at = now() where false")
    return incident


@pytest.fixture(scope="module")
def api(database: str):
    """`bagula api` as bagula_ingest, as deployed."""
    server = ApiServer(
        as_role(database, INGEST),
        BAGULA_API_WORKERS="1",
        BAGULA_OTLP_SESSION_QUIET_S="0.2",
        BAGULA_OTLP_ASSEMBLE_INTERVAL_S="0.1",
    )
    try:
        yield server.start()
    finally:
        server.kill()  # also when it never came up


def _errors(server: ApiServer) -> str:
    """The server's logged errors, to show with a failed answer."""
    return "\n".join(line[-1500:] for line in Path(server.log.name).read_text().splitlines() if '"ERROR"' in line)


def test_the_api_serves_every_endpoint_as_its_role(database: str, api: ApiServer):
    """`bagula api` as bagula_ingest, as deployed: sessions and OpenTelemetry spans stored (the
    assembler's sessions too), alert routes and the data policy managed, an incident that detection
    (as bagula_transform) opened acknowledged and resolved by hand, a session erased."""
    with psycopg.connect(database) as conn:
        key = keys.create_key(conn, f"roles-{uuid.uuid4().hex[:6]}")

    def answered(response: httpx.Response, status: int = 200) -> httpx.Response:
        assert response.status_code == status, f"{response.text}\n{_errors(api)}"
        return response

    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {key.secret}"}, timeout=30) as client:
        sessions = make_batch(random.Random(3), 3, start_ms=int(time.time() * 1000) - 3_600_000)
        stored = answered(client.post("/v1/sessions/ingest", json={"sessions": sessions, "timestamp": 0}))
        assert stored.json()["stored"] == 3

        answered(
            client.post(
                "/v1/traces",
                content=_otlp_export(uuid.uuid4().hex, time.time_ns() - 60_000_000_000),
                headers={"Content-Type": "application/json"},
            )
        )
        assembled = "select outcome from otlp_sessions where project_id = %s"
        assert wait_for(lambda: _rows(database, assembled, key.project_id), timeout=60) == [("stored",)], _errors(api)

        answered(
            client.put(
                "/v1/alert-route", json={"webhookUrl": "https://hooks.example.com/T/B/x", "minSeverity": "major"}
            )
        )
        assert answered(client.get("/v1/alert-route")).json()["minSeverity"] == "major"
        assert answered(client.get("/v1/data-policy")).json()["rawDays"] > 0

        incident = _incident(as_role(database, TRANSFORM), key.project_id, sessions[0]["sessionId"])
        assert answered(client.get("/v1/incidents")).json()["incidents"][0]["incidentId"] == str(incident)
        answered(client.post(f"/v1/incidents/{incident}/acknowledge"))
        answered(client.post(f"/v1/incidents/{incident}/resolve"))
        # The opening paged (the project's route), so the resolution is alerted too.
        alerted = "select count(*) from alerts where project_id = %s and source = 'incident'"
        assert _rows(database, alerted, key.project_id) == [(2,)]
        answered(client.delete("/v1/alert-route"), 204)

        erased = answered(client.delete(f"/v1/sessions/{sessions[0]['sessionId']}"))
        assert erased.json()["sessions"] == 1
        left = "select count(*) from agent_sessions where session_id = %s"
        assert _rows(database, left, sessions[0]["sessionId"]) == [(0,)]
        assert answered(client.get("/v1/erasures")).json()["erasures"][0]["sessions"] == 1


def test_retention_runs_as_the_live_paths_role(database: str, api: ApiServer):
    """The live path (bagula_transform) applies retention: everything of a project older than its
    policy goes, raw rows, spans, verdicts and the marts' rows alike."""
    with psycopg.connect(database) as conn:
        key = keys.create_key(conn, f"retention-{uuid.uuid4().hex[:6]}")
        conn.execute(
            "insert into project_data_policies (project_id, raw_days, marts_days, verdicts_days) values (%s, 1, 1, 1)",
            (key.project_id,),
        )
    old = int((datetime.now(timezone.utc) - timedelta(days=3)).timestamp() * 1000)
    sessions = make_batch(random.Random(5), 4, start_ms=old)
    answer = httpx.post(
        api.base_url + "/v1/sessions/ingest",
        json={"sessions": sessions, "timestamp": 0},
        headers={"Authorization": f"Bearer {key.secret}"},
        timeout=30,
    )
    assert answer.json()["stored"] == 4, answer.text
    with psycopg.connect(as_role(database, TRANSFORM), autocommit=True) as conn:
        run = retention.apply(conn, retention.Defaults(3650, 3650, 3650))
    assert run is not None
    assert run.rows_deleted["agent_sessions"] == 4
    assert _rows(database, "select count(*) from agent_sessions where project_id = %s", key.project_id) == [(0,)]
