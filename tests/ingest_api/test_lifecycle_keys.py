"""Scoped keys: every /v1 endpoint checks one scope (ingest, read or admin), keys may expire,
keys list with their last use, and keys made before scopes existed keep their full power."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest
from alembic import command
from fastapi.routing import APIRoute

from ingest_api import db
from ingest_api.app import create_app
from ingest_api.settings import ApiSettings
from ingest_api.store import keys
from simulator.samples import make_batch
from tests.support.cli import bagula
from tests.support.services import INGEST, wait_for

# Writes agents make; every other write changes the project's state (admin).
INGEST_ROUTES = {("POST", "/v1/sessions/ingest"), ("POST", "/v1/traces")}
# Reads for admins only: a webhook URL is a secret; the erasure audit trail is the admins'.
ADMIN_READS = {"/v1/alert-route", "/v1/erasures"}


def scopes_of(route: APIRoute) -> list[str]:
    """The scopes its dependency tree checks (ingest_api.deps.require marks each checker)."""
    found, stack = [], [route.dependant]
    while stack:
        dependant = stack.pop()
        scope = getattr(dependant.call, "scope", None)
        if scope is not None:
            found.append(scope)
        stack.extend(dependant.dependencies)
    return found


def api_routes(routes) -> list[APIRoute]:
    """The app's endpoints, through included routers (FastAPI wraps each in an `original_router`)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif getattr(route, "original_router", None) is not None:
            found += api_routes(route.original_router.routes)
    return found


def v1_routes() -> list[tuple[str, str, APIRoute]]:
    app = create_app(ApiSettings(database_url="postgresql://unused/none"))
    published = app.openapi()["paths"]
    routes = [
        (method, route.path, route)
        for route in api_routes(app.routes)
        if route.path.startswith("/v1/")
        for method in route.methods
    ]
    # Every /v1 path the OpenAPI document publishes is among them (and the other way round).
    assert {path for _, path, _ in routes} == {p for p in published if p.startswith("/v1/")}
    return routes


def test_every_v1_route_checks_exactly_one_scope_and_the_right_one():
    routes = v1_routes()
    assert len(routes) > 20
    for method, path, route in routes:
        checked = scopes_of(route)
        assert len(checked) == 1, f"{method} {path} checks scopes {checked}: each /v1 route needs exactly one"
        expected = (
            "ingest"
            if (method, path) in INGEST_ROUTES
            else "read"
            if method == "GET" and path not in ADMIN_READS
            else "admin"
        )
        assert checked == [expected], f"{method} {path} checks {checked[0]!r}, expected {expected!r}"


def new_key(url: str, project: str, *scopes: str, expires_at: datetime | None = None) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        made = keys.create_key(conn, project, scopes or keys.SCOPES, expires_at)
    return {"Authorization": f"Bearer {made.secret}"}


def test_each_scope_allows_its_endpoints_and_refuses_the_others_with_403(api, database_url):
    project = f"scopes-{uuid.uuid4().hex[:8]}"
    ingest, read, admin = (new_key(database_url, project, s) for s in ("ingest", "read", "admin"))
    base = api.base_url
    batch = make_batch(random.Random(3), 2, start_ms=1_764_000_000_000)
    session_id = batch[0]["sessionId"]

    assert httpx.post(base + INGEST, json={"sessions": batch}, headers=ingest).status_code == 200
    for headers in (read, admin):
        refused = httpx.post(base + INGEST, json={"sessions": batch}, headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "'ingest'" in refused.json()["detail"]

    assert httpx.get(base + f"/v1/sessions/{session_id}", headers=read).status_code == 200
    for headers in (ingest, admin):
        assert httpx.get(base + f"/v1/sessions/{session_id}", headers=headers).status_code == 403
        assert httpx.get(base + "/v1/agents", headers=headers).status_code == 403

    for headers in (ingest, read):
        assert httpx.delete(base + f"/v1/sessions/{session_id}", headers=headers).status_code == 403
        assert httpx.put(base + "/v1/data-policy", json={"rawDays": 30}, headers=headers).status_code == 403
        assert httpx.get(base + "/v1/alert-route", headers=headers).status_code == 403
    # Still there: the refused erasures erased nothing.
    assert httpx.get(base + f"/v1/sessions/{session_id}", headers=read).status_code == 200
    assert httpx.delete(base + f"/v1/sessions/{session_id}", headers=admin).json()["sessions"] == 1
    assert httpx.get(base + f"/v1/sessions/{session_id}", headers=read).status_code == 404


def test_an_expired_key_is_refused_with_401(api, database_url):
    project = f"expiry-{uuid.uuid4().hex[:8]}"
    past = new_key(database_url, project, expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    future = new_key(database_url, project, expires_at=datetime.now(timezone.utc) + timedelta(days=1))
    refused = httpx.get(api.base_url + "/v1/agents", headers=past)
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    assert httpx.get(api.base_url + "/v1/agents", headers=future).status_code == 200


def test_last_use_is_recorded_at_most_once_a_minute_per_key_and_process(database_url):
    from tests.support.services import ApiServer

    server = ApiServer(database_url, BAGULA_API_WORKERS="1").start()
    try:
        project = f"used-{uuid.uuid4().hex[:8]}"
        headers = new_key(database_url, project, "read")
        with psycopg.connect(database_url, autocommit=True) as conn:

            def last_used():
                return conn.execute(
                    "select k.last_used_at from api_keys k join projects p using (project_id) where p.name = %s",
                    (project,),
                ).fetchone()[0]

            assert last_used() is None
            assert httpx.get(server.base_url + "/v1/agents", headers=headers).status_code == 200
            first = wait_for(last_used, timeout=10)
            for _ in range(20):
                assert httpx.get(server.base_url + "/v1/agents", headers=headers).status_code == 200
            # The write is the request's background task: by the time a later request of the same
            # key was answered, a second write would have been issued.
            assert last_used() == first
    finally:
        server.stop()


def test_keys_made_before_scopes_keep_every_scope(pg):
    """The least-surprise migration: a key that worked before the upgrade works after it."""
    url = pg.create_database(f"keys_{uuid.uuid4().hex[:8]}")
    command.upgrade(db.alembic_config(url), "0007")
    with psycopg.connect(url) as conn:
        project = conn.execute("insert into projects (name) values ('old') returning project_id").fetchone()[0]
        conn.execute(
            "insert into api_keys (project_id, key_hash, key_prefix) values (%s, %s, 'bgl_old')",
            (project, keys.hash_key("bgl_" + "o" * 43)),
        )
    db.upgrade(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("select scopes from api_keys").fetchone()[0] == ["ingest", "read", "admin"]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("update api_keys set scopes = '{write}'")


def test_keys_create_with_scopes_and_expiry_and_list_shows_them(database_url):
    project = f"cli-scopes-{uuid.uuid4().hex[:8]}"
    created = bagula(database_url, "keys", "create", "--project", project, "--scope", "ingest", "--expires", "30d")
    assert created.returncode == 0, created.stderr
    assert "scopes ingest" in created.stderr
    listed = bagula(database_url, "keys", "list", "--project", project)
    assert listed.returncode == 0, listed.stderr
    line = listed.stdout.strip()
    expected_expiry = (datetime.now(timezone.utc) + timedelta(days=30)).strftime("%Y-%m-%d")
    assert "  ingest  " in line and f"expires {expected_expiry}" in line and "never used" in line
    default = bagula(database_url, "keys", "create", "--project", project)
    assert "scopes ingest, read, admin" in default.stderr
    bad = bagula(database_url, "keys", "create", "--project", project, "--scope", "write")
    assert bad.returncode != 0 and "write" in bad.stderr
