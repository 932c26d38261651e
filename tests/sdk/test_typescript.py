"""The TypeScript client (sdk/typescript, `@bagula/client`): its own suite, run with Node's test
runner against a real API and database started here, one pytest case per Node test; then the
seed's example session (which one of those Node tests sends) in the marts Superset reads.

The Node tests are declared as ``test("name", ...)`` at the top of each ``test/*.test.mjs``; a
case here checks that what ran is exactly what is declared, so a test can neither be added
without being counted nor vanish unnoticed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from ingest_api import db
from orchestration.dbt import transform
from tests.support.services import ApiServer, new_tenant

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sdk" / "typescript"
NODE_TEST_FILES = sorted((PACKAGE / "test").glob("*.test.mjs"))
DECLARED = [
    (path.name, json.loads(f'"{name}"'))
    for path in NODE_TEST_FILES
    for name in re.findall(r'^test\("((?:[^"\\]|\\.)*)"', path.read_text(), re.MULTILINE)
]


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=PACKAGE, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def node_package() -> Path:
    """The package built as published (ESM and CommonJS with declarations) and its examples.
    scripts/ensure-node.sh installs the Node packages (npm ci); this does too when they are missing."""
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is not installed: run scripts/ensure-node.sh"
    if not (PACKAGE / "node_modules" / "typescript").is_dir():
        _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], timeout=600)
    _run(["node", "scripts/build.mjs"], timeout=300)
    return PACKAGE


@pytest.fixture(scope="module")
def ts_platform(pg):
    """A database of its own (the marts test rebuilds marts spanning every project), its API and a tenant."""
    url = pg.create_database(f"sdk_ts_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    api = ApiServer(url).start()
    tenant = new_tenant(api, url)
    yield url, api, tenant
    tenant.client.close()
    api.stop()


@pytest.fixture(scope="module")
def node_results(node_package, ts_platform, tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every Node test file run once: top-level results by (file, test name)."""
    url, api, tenant = ts_platform
    report = tmp_path_factory.mktemp("node") / "results.jsonl"
    env = {
        **os.environ,
        "BAGULA_ENDPOINT": api.base_url,
        "BAGULA_API_KEY": tenant.key,
        "BAGULA_DATABASE_URL": url,
        "BAGULA_PYTHON": sys.executable,
    }
    command = [
        "node", "--test", "--test-timeout=120000",
        "--test-reporter=./scripts/jsonl-reporter.mjs", f"--test-reporter-destination={report}",
        "--test-reporter=spec", "--test-reporter-destination=stdout",
        *(str(path.relative_to(PACKAGE)) for path in NODE_TEST_FILES),
    ]
    run = subprocess.run(command, cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=600)
    results: dict[tuple[str, str], dict] = {}
    for line in report.read_text().splitlines():
        event = json.loads(line)
        if event["nesting"] == 0:
            event["output"] = run.stdout[-6000:] + run.stderr[-3000:]
            results[(Path(event["file"]).name, event["name"])] = event
    assert results, f"the Node test runner reported nothing:\n{run.stdout}\n{run.stderr}"
    return results


@pytest.mark.parametrize("file, name", DECLARED, ids=[f"{file}::{name}" for file, name in DECLARED])
def test_node(node_results, file, name):
    result = node_results.get((file, name))
    assert result is not None, f"{file}: {name!r} did not run"
    assert result["passed"] and not result["skipped"], f"{result['error']}\n\n{result['output']}"


def test_every_node_test_that_ran_is_declared_and_counted(node_results):
    assert sorted(node_results) == sorted(DECLARED)
    assert len(DECLARED) >= 25


def test_the_seed_examples_session_is_in_the_marts_superset_reads(node_results, ts_platform):
    """The dashboards read the marts; the seed example's session is there as sent."""
    assert node_results[("seed-example.test.mjs", SEED_TEST)]["passed"]
    url, _, tenant = ts_platform
    assert transform(url), "dbt build failed"
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """select status, user_id, turn_count, llm_call_count, tool_call_count, tokens_input, tokens_output,
                      total_cost_usd, models, tools_used, user_satisfaction
               from marts.fct_sessions where project_id = %s and agent_name = 'customer-support-agent'""",
            (tenant.project_id,),
        ).fetchall()
    # The OpenAI stub's usage (812 + 95, then 930 + 14 tokens) at gpt-4's list price (30 / 60 USD per million).
    cost = (812 * 30 + 95 * 60) / 1e6 + (930 * 30 + 14 * 60) / 1e6
    [(status, user, turns, calls, tools, tokens_in, tokens_out, total_cost, models, tools_used, satisfaction)] = rows
    assert (status, user, turns, calls, tools, tokens_in, tokens_out, models, tools_used, satisfaction) == (
        "success", "u-42", 2, 2, 1, 812 + 930, 95 + 14, "gpt-4", "search_orders", 5)
    assert math.isclose(total_cost, cost, rel_tol=1e-9)


SEED_TEST = "the seed's example runs unchanged, and its session reads back from the API whole"
