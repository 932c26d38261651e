"""Fixtures every test folder shares: a real PostgreSQL and a real API server, started by
the test run itself, and fresh tenants. Helpers are in tests/support."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bagula.localdb import LocalPostgres
from ingest_api import db
from orchestration.dbt import PROJECT_DIR, ensure_manifest
from tests.support.services import ApiServer, Tenant, new_tenant, remove_cluster, start_cluster

# Test modules that share a session fixture costing minutes (the platform image's environment):
# run together in one pytest-xdist worker, so that it is made once.
SHARED_SCOPES = ("tests/deploy/",)
# The longest scopes, started first, so that no worker is left with one of them at the end.
LONGEST_FIRST = (
    "tests/superset/test_superset.py",
    "tests/deploy/",
    "tests/orchestration/test_detection.py",
    "tests/orchestration/test_faults.py",
    "tests/orchestration/test_pipeline_properties.py",
    "tests/bagula/test_cli.py",
    "tests/orchestration/test_transform.py",
    "tests/orchestration/test_incidents.py",
    "tests/orchestration/test_sensor.py",
)


def pytest_configure(config: pytest.Config) -> None:
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        # Each worker's dbt writes its own target folder and logs: two dbt runs writing one
        # manifest and one partial-parse file at once corrupt each other.
        os.environ["DBT_TARGET_PATH"] = str(PROJECT_DIR / "target" / f"pytest-{worker}")
        os.environ["DBT_LOG_PATH"] = str(PROJECT_DIR / "logs" / f"pytest-{worker}")
    else:
        # The manifest Dagster reads, parsed once before any worker starts (not by two at once).
        ensure_manifest()


def scope_of(nodeid: str) -> str:
    """What runs in one worker: a test module, or a folder whose modules share a costly fixture."""
    module = nodeid.split("::", 1)[0]
    return next((shared for shared in SHARED_SCOPES if module.startswith(shared)), module)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        scope = scope_of(item.nodeid)
        return next((i for i, name in enumerate(LONGEST_FIRST) if scope.startswith(name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within each scope is kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ByScope(config, log)


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
