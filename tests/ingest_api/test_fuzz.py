"""Schema fuzzing: schemathesis generates requests for every operation in the API's own
OpenAPI document, valid and not, with a key and without, and every answer must be in the
document (status, content type, body schema) and never a 5xx."""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingest_api import db
from ingest_api.app import create_app
from orchestration.dbt import transform
from tests.support.services import ApiServer, new_tenant

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [(method.upper(), path) for path, methods in create_app().openapi()["paths"].items()
              for method in methods]
# Examples per operation, with a key and without one: bounded to keep the suite fast.
EXAMPLES = {True: 40, False: 8}


@pytest.fixture(scope="module")
def fuzzed(pg):
    # A database of its own whose marts exist (before the first build, the endpoints that read
    # them answer 503 by design: not the input's doing).
    database_url = pg.create_database(f"fuzz_{uuid.uuid4().hex[:8]}")
    db.upgrade(database_url)
    assert transform(database_url, "--quiet")
    # Rates high enough that fuzzing meets the handlers, not the limiter.
    server = ApiServer(database_url, BAGULA_RATE_LIMIT_PER_KEY="100000/second",
                       BAGULA_FAILED_AUTH_LIMIT="100000/second").start()
    tenant = new_tenant(server, database_url)
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
    yield server, tenant, schema
    server.stop()


@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_answers_as_documented(fuzzed, method, path, with_key):
    server, tenant, schema = fuzzed
    operation = schema[path][method]
    headers = {"Authorization": f"Bearer {tenant.key}"} if with_key else None

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES[with_key], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def answers_as_documented(case):
        case.call_and_validate(base_url=server.base_url, headers=headers, checks=CHECKS)

    answers_as_documented()
