"""The platform image, without a container engine: its build context (the repository exactly as
.dockerignore leaves it) installs into a fresh virtual environment as the Dockerfile installs it,
and its entry points (docker-compose.yml's init, api, live, dagster-webserver, dagster-daemon),
run with the image's ENV by an unprivileged user that may write only where the image lets it,
start against a test database and do their work, each as its own role."""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from bagula.localdb import free_port
from bagula.roles import INGEST, TRANSFORM
from simulator.samples import make_batch
from tests.deploy.checks import (
    PLATFORM_DOCKERFILE,
    REPO,
    Image,
    compose,
    compose_environment,
    copy_context,
    exec_form,
    runtime_env,
    stages,
)
from tests.deploy.conftest import ROLE_ENV, new_database
from tests.support.services import wait_for

AGENT = "customer-support-agent"

# Five services of a fresh, not byte-compiled environment starting side by side on two shared cores.
pytestmark = pytest.mark.timeout(600)


def test_dockerignore_sends_the_sources_and_nothing_local_generated_or_secret(tmp_path: Path):
    tree = tmp_path / "repo"
    kept = [
        "pyproject.toml",
        "README.md",
        "constraints.txt",
        "ingest_api/app.py",
        "ingest_api/migrations/versions/0001_initial_schema.py",
        "sdk/python/bagula_client/__init__.py",
        "dbt_project/dbt_project.yml",
        "dbt_project/models/marts/fct_sessions.sql",
        "superset/bootstrap.py",
        "superset/assets/charts/cost.yaml",
    ]
    left_out = [
        ".env",
        ".env.production",
        ".git/HEAD",
        ".venv/bin/python",
        ".venv-checks/bin/uv",
        ".venv-superset/bin/python",
        ".bagula/postgres/password",
        "ingest_api/__pycache__/app.cpython-311.pyc",
        "bagula.egg-info/PKG-INFO",
        "build/lib/bagula/__init__.py",
        "dbt_project/target/manifest.json",
        "dbt_project/logs/dbt.log",
        "sdk/typescript/node_modules/x/index.js",
        "tests/test_x.py",
        "test-artifacts/superset/a.png",
        "ground-truth.jsonl",
        "docs/deployment.md",
        "deploy/k8s/base/api.yaml",
    ]
    for relative in kept + left_out:
        (tree / relative).parent.mkdir(parents=True, exist_ok=True)
        (tree / relative).write_text("x")
    shutil.copy(REPO / ".dockerignore", tree / ".dockerignore")

    sent = copy_context(tmp_path / "context", root=tree)

    assert set(sent) - {".dockerignore", "Dockerfile"} == set(kept)


def test_the_dockerfile_installs_the_context_as_this_suite_does():
    build, runtime = stages(PLATFORM_DOCKERFILE)[0], stages(PLATFORM_DOCKERFILE)[-1]
    runs = " ".join(args for name, args in build if name == "RUN")
    assert '--constraint constraints.txt ".[k8s]"' in runs and " -e " not in runs
    assert "cp -r dbt_project /opt/bagula/dbt_project" in runs and "ensure_manifest()" in runs
    assert ("COPY", "--from=build /opt/bagula /opt/bagula") in runtime
    env = runtime_env(PLATFORM_DOCKERFILE)
    assert env["BAGULA_DBT_PROJECT_DIR"] == "/opt/bagula/dbt_project"
    assert env["DBT_TARGET_PATH"].startswith("/tmp/") and env["DBT_LOG_PATH"].startswith("/tmp/")
    assert env["DAGSTER_HOME"] == env["BAGULA_DAGSTER_HOME"] == "/var/lib/bagula/dagster"
    assert exec_form(dict(runtime)["CMD"]) == ["bagula", "api"]


def _post(base_url: str, key: str, sessions: list[dict]) -> httpx.Response:
    return httpx.post(
        base_url + "/v1/sessions/ingest",
        json={"sessions": sessions, "timestamp": int(time.time() * 1000)},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _initialization_data(page: str) -> dict:
    """The settings Dagster's web page hands its front end."""
    found = re.search(r'<script type="application/json" id="initialization-data"[^>]*>(.*?)</script>', page, re.S)
    assert found, page[:2000]
    return json.loads(found.group(1))


def _marts_sessions(url: str) -> int:
    with psycopg.connect(url) as conn:
        if conn.execute("select to_regclass('marts.fct_sessions') is null").fetchone()[0]:
            return 0
        return conn.execute("select count(*) from marts.fct_sessions").fetchone()[0]


def _judged_up_to_the_marts(url: str) -> bool:
    """Detection's watermark has reached the marts': every session they hold was judged."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select (select watermark from pipeline_watermarks where name = 'detection')"
            " >= (select max(watermark) from marts.fct_sessions)"
        ).fetchone()
    return bool(row[0])


def _runs(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        if conn.execute("select to_regclass('dagster.runs') is null").fetchone()[0]:
            return []
        return [row[0] for row in conn.execute("select status from dagster.runs order by create_timestamp")]


def test_the_images_entry_points_start_and_work_each_as_its_own_role(platform_image: Image, pg):
    """docker-compose.yml's platform services, with its commands and environments (the database
    moved to the test cluster), run from the regular install each as its role."""
    url = new_database(pg, "image")
    database = urlsplit(url).path.lstrip("/")
    dotenv = {**ROLE_ENV, "POSTGRES_PASSWORD": pg.password_file.read_text().strip()}

    def environment(service: str, **extra: str) -> dict[str, str]:
        return {**compose_environment(service, dotenv, "127.0.0.1", pg.port, database), **extra}

    def command(service: str, **options: str) -> list[str]:
        argv = list(compose()["services"][service]["command"])
        for option, value in options.items():
            argv[argv.index(option) + 1] = value
        return argv

    assert environment("init")["BAGULA_DATABASE_URL"] == url
    init = platform_image.run(command("init"), environment("init"))
    assert init.returncode == 0, init.stderr
    key = init.stdout.strip().splitlines()[-1]
    assert key.startswith("bgl_")
    again = platform_image.run(command("init"), environment("init"))
    assert again.returncode == 0 and again.stdout.strip() == "", again.stderr
    assert "has one already" in again.stderr

    api_port, metrics_port, dagster_port = free_port(), free_port(), free_port()
    api_url, dagster_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{dagster_port}"
    sessions = make_batch(random.Random(7), 12, start_ms=int(time.time() * 1000) - 3_600_000)

    api_env = environment(
        "api",
        BAGULA_API_HOST="127.0.0.1",
        BAGULA_API_PORT=str(api_port),
        BAGULA_METRICS_HOST="127.0.0.1",
        BAGULA_METRICS_PORT=str(metrics_port),
    )
    assert urlsplit(api_env["BAGULA_DATABASE_URL"]).username == INGEST
    with platform_image.service(command("api"), api_env) as api:
        api.wait_http(api_url + "/readyz")
        # Prometheus metrics on their own port (the one deploy/k8s annotates for scraping).
        assert "# TYPE" in api.wait_http(f"http://127.0.0.1:{metrics_port}/metrics").text
        stored = _post(api_url, key, sessions)
        assert stored.status_code == 200, stored.text
        assert stored.json()["stored"] == len(sessions)

        webserver_command = command("dagster-webserver", **{"--host": "127.0.0.1", "--port": str(dagster_port)})
        with (
            platform_image.service(command("live"), environment("live")) as live,
            platform_image.service(webserver_command, environment("dagster-webserver")) as webserver,
            platform_image.service(command("dagster-daemon"), environment("dagster-daemon")) as daemon,
        ):
            # The live path builds the marts and judges them, as bagula_transform, from the dbt
            # project the image ships (not writable here) with dbt's artefacts under /tmp.
            try:
                wait_for(lambda: _marts_sessions(url) == len(sessions) and _judged_up_to_the_marts(url), timeout=300)
            except AssertionError:
                raise AssertionError(f"marts {_marts_sessions(url)}\n{live.output()}") from None
            # docker-compose.yml's health check of the live path: its heartbeat is recent.
            check = compose()["services"]["live"]["healthcheck"]["test"][1:]
            healthy = platform_image.run(check, environment("live"), timeout=60)
            assert healthy.returncode == 0, healthy.stdout + healthy.stderr

            webserver.wait_http(dagster_url + "/server_info", timeout=180)
            # Dagster's UI: no newsletter prompt, no usage statistics.
            nux = httpx.post(dagster_url + "/graphql", json={"query": "{ shouldShowNux }"}, timeout=30)
            assert nux.json() == {"data": {"shouldShowNux": False}}
            assert _initialization_data(httpx.get(dagster_url + "/", timeout=30).text)["telemetryEnabled"] is False
            # docker-compose.yml's health check of the daemon, once its first heartbeats are in.
            check = compose()["services"]["dagster-daemon"]["healthcheck"]["test"][1:]
            try:
                wait_for(
                    lambda: platform_image.run(check, environment("dagster-daemon"), timeout=60).returncode == 0,
                    timeout=180,
                    interval=2,
                )
            except AssertionError:
                raise AssertionError(daemon.output()) from None
            # The sensor stood aside: the live path kept up, no run failed.
            assert "FAILURE" not in _runs(url)

        # The marts dbt wrote as bagula_transform are the API's to read; pinning writes baselines.
        headers = {"Authorization": f"Bearer {key}"}
        metrics = httpx.get(
            f"{api_url}/v1/agents/{AGENT}/metrics", params={"window": "24h"}, headers=headers, timeout=30
        )
        assert metrics.status_code == 200, metrics.text
        assert metrics.json()["totalSessions"] == len(sessions)
        pinned = httpx.put(
            f"{api_url}/v1/agents/{AGENT}/baseline",
            headers=headers,
            timeout=30,
            json={"from": sessions[0]["startTime"], "to": sessions[-1]["startTime"] + 1},
        )
        assert pinned.status_code == 201, pinned.text

    with psycopg.connect(url) as conn:
        owners = dict(conn.execute("select schemaname, tableowner from pg_tables where tablename = 'fct_sessions'"))
    assert owners == {"marts": TRANSFORM}
