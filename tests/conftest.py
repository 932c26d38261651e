"""Fixtures every test folder shares: a real PostgreSQL and a real API server, started by
the test run itself, and fresh tenants. Helpers are in tests/support."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bagula.localdb import LocalPostgres
from ingest_api import db
from tests.support.services import ApiServer, Tenant, new_tenant, remove_cluster, start_cluster


@pytest.fixture(scope="session")
def pg() -> Iterator[LocalPostgres]:
    cluster = start_cluster()
    db.upgrade(cluster.url())
    yield cluster
    remove_cluster(cluster)


@pytest.fixture(scope="session")
def database_url(pg: LocalPostgres) -> str:
    return pg.url()


@pytest.fixture(scope="session")
def api(database_url: str) -> Iterator[ApiServer]:
    server = ApiServer(database_url).start()
    yield server
    server.stop()


@pytest.fixture
def tenant(api: ApiServer, database_url: str) -> Iterator[Tenant]:
    t = new_tenant(api, database_url)
    yield t
    t.client.close()


@pytest.fixture
def other_tenant(api: ApiServer, database_url: str) -> Iterator[Tenant]:
    t = new_tenant(api, database_url)
    yield t
    t.client.close()
