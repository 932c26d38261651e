"""Superset over the marts: kept as code, imported idempotently, every chart answering, checked in Chromium.

One Superset for the module: `bagula superset init` on a new database (before the marts
exist, as `bagula run` does on a fresh install), then `bagula simulate` and `bagula pipeline run` (marts and real verdicts)
fill it, then Superset serves it. Needs .venv-superset and Debian's chromium
(scripts/ensure-superset.sh --browser, which scripts/test.sh runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest

from bagula.localdb import free_port
from bagula.settings import PlatformSettings, SupersetSettings
from bagula.superset import (
    ASSETS_DIR,
    SUPERSET_DIR,
    Superset,
    SupersetError,
    reader_url,
    secret_key,
    superset_python,
    superset_serve_command,
)
from ingest_api import db
from ingest_api.store import keys
from orchestration.dbt import transform
from tests.support.services import ApiServer
from tests.support.superset import (
    ARTIFACTS,
    RESOLVE_SOME_SQL,
    SupersetSite,
    assets,
    chart_uuid,
    dashboard_charts,
    metadata_snapshot,
    pg_rows,
    run_cli,
    shown_admin_password,
)

pytestmark = pytest.mark.timeout(290)


def fill_with_simulated_traffic(database_url: str, tmp_dir) -> None:
    api = ApiServer(database_url).start()
    try:
        with psycopg.connect(database_url) as conn:
            key = keys.create_key(conn, "superset-demo").secret
        simulate = subprocess.run(
            [sys.executable, "-m", "bagula", "simulate", "--days", "2", "--seed", "1", "--api-key", key,
             "--endpoint", api.base_url, "--no-progress", "--inject", "cost_spike@50%", "--inject", "skill_bloat@70%",
             "--ground-truth", str(tmp_dir / "truth.jsonl")],
            capture_output=True, text=True, timeout=280,
        )
        assert simulate.returncode == 0, simulate.stderr[-3000:]
    finally:
        api.stop()
    # The marts and real verdicts, as the platform's sensor would make them.
    pipeline = subprocess.run([sys.executable, "-m", "bagula", "pipeline", "run"],
                              env={**os.environ, "BAGULA_DATABASE_URL": database_url},
                              capture_output=True, text=True, timeout=280)
    assert pipeline.returncode == 0, pipeline.stderr[-3000:]
    with psycopg.connect(database_url) as conn:
        conn.execute(RESOLVE_SOME_SQL)


def wait_until_serving(base_url: str, process: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("Superset exited: " + log_path.read_text()[-3000:])
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("Superset did not start: " + log_path.read_text()[-3000:])


@pytest.fixture(scope="module")
def site(pg, tmp_path_factory) -> Iterator[SupersetSite]:
    superset_python(Superset(SupersetSettings(), Path(".bagula")))  # a clear error when ensure-superset.sh has not run
    database_url = pg.create_database(f"superset_{uuid.uuid4().hex[:8]}")
    db.upgrade(database_url)
    data_dir = tmp_path_factory.mktemp("superset-data")

    first = run_cli(["superset", "init"], database_url, data_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    admin_password = shown_admin_password(first.stdout)
    assert admin_password, first.stdout

    fill_with_simulated_traffic(database_url, tmp_path_factory.mktemp("simulate"))

    port = free_port()
    superset = Superset.of(PlatformSettings(data_dir=data_dir), SupersetSettings())
    argv, env = superset_serve_command(superset, port)
    log_path = data_dir / "superset-server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base_url, server, log_path)
        yield SupersetSite(database_url, data_dir, base_url, "admin", admin_password, first.stdout, superset)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_first_init_shows_a_generated_admin_password_that_logs_in(site):
    assert site.admin_password not in ("admin", "")
    assert len(site.admin_password) >= 16
    with site.api() as client:  # logs in with it, or raises
        assert client.get("/api/v1/me/").json()["result"]["username"] == "admin"


def test_second_init_changes_nothing(site):
    before = metadata_snapshot(site.metadata_db)
    reader_password = site.reader_password

    again = run_cli(["superset", "init"], site.database_url, site.data_dir)

    assert again.returncode == 0, again.stderr[-3000:]
    assert shown_admin_password(again.stdout) is None
    assert site.admin_password not in again.stdout
    assert metadata_snapshot(site.metadata_db) == before
    assert site.reader_password == reader_password
    with site.api() as client:
        assert client.get("/api/v1/me/").status_code == 200


def test_every_asset_in_the_repository_is_imported(site):
    with site.api() as client:
        def listed(kind: str) -> set[str]:
            answer = client.get(f"/api/v1/{kind}/", params={"q": "(page_size:100,columns:!(uuid))"})
            answer.raise_for_status()
            return {row["uuid"] for row in answer.json()["result"]}

        assert listed("chart") == {c["uuid"] for c in assets("charts").values()}
        assert listed("dataset") == {d["uuid"] for d in assets("datasets").values()}
        assert listed("dashboard") == {d["uuid"] for d in assets("dashboards").values()}
    titles = {d["dashboard_title"] for d in assets("dashboards").values()}
    assert titles == {"Agent overview", "Cost tracking", "Tool usage", "Regressions and anomalies", "Session explorer"}


def test_every_chart_returns_rows_without_error(site):
    with site.api() as client:
        charts = client.get("/api/v1/chart/", params={"q": "(page_size:100,columns:!(id,uuid,slice_name))"})
        charts.raise_for_status()
        results = {}
        for chart in charts.json()["result"]:
            answer = client.get(f"/api/v1/chart/{chart['id']}/data/")
            assert answer.status_code == 200, (chart["slice_name"], answer.text[:500])
            for query in answer.json()["result"]:
                assert query["status"] == "success" and not query["error"], (chart["slice_name"], query["error"])
                assert query["rowcount"] > 0, f"{chart['slice_name']}: no rows\n{query['query']}"
            results[chart["uuid"]] = answer.json()["result"][0]["data"]
    assert len(results) == len(assets("charts"))

    # A few figures against the raw tables the marts were built from.
    (sessions,), = pg_rows(site.database_url, "select count(*) from agent_sessions")
    (cost,), = pg_rows(site.database_url, "select sum(cost_usd) from llm_calls")
    (open_items,), = pg_rows(site.database_url, "select (select count(*) from anomalies where not resolved) "
                                                "+ (select count(*) from regressions where not resolved)")
    assert results[chart_uuid("Sessions")] == [{"sessions": sessions}]
    assert Decimal(str(results[chart_uuid("Total cost")][0]["cost_usd"])) == pytest.approx(cost, rel=Decimal('1e-9'))
    assert results[chart_uuid("Open items")] == [{"open_items": open_items}]
    (resolved,), = pg_rows(site.database_url, "select count(*) from anomalies where resolved")
    assert open_items > 0 and resolved > 0  # resolved items are not counted


@pytest.fixture(scope="module")
def browser_reports(site) -> dict[str, dict]:
    """Every dashboard opened in headless Chromium, in one browser session."""
    reports = site.check_in_browser([d["slug"] for d in assets("dashboards").values()])
    return {report["slug"]: report for report in reports}


@pytest.mark.parametrize("slug", [d["slug"] for d in assets("dashboards").values()])
def test_dashboard_renders_every_chart_in_chromium(browser_reports, slug):
    dashboard = next(d for d in assets("dashboards").values() if d["slug"] == slug)

    report = browser_reports[slug]

    assert report["title"] == dashboard["dashboard_title"]
    errors = {c["name"]: c["error"] for c in report["charts"] if c["state"] != "rendered"}
    assert not errors, f"charts not rendered on {slug}: {errors} (screenshot {report['screenshot']})"
    assert {c["name"] for c in report["charts"]} == dashboard_charts(dashboard)
    assert not report["failed_requests"], report["failed_requests"]
    # The time range filter's default (the last 7 days) applies to every chart.
    assert {c["name"]: c["applied_filters"] for c in report["charts"]} == {c["name"]: 1 for c in report["charts"]}
    assert (ARTIFACTS / f"{slug}.png").stat().st_size > 10_000


def test_agent_filter_narrows_every_chart_of_a_dashboard_built_on_several_marts(site):
    # Agent overview and Cost tracking read three marts each; the filter targets one of them
    # and must apply, by column name, to the charts of the others too.
    reports = site.check_in_browser(["agent-overview", "cost-tracking"], agent="writer-agent")

    for report in reports:
        assert report["charts"] and not report["failed_requests"]
        for chart in report["charts"]:
            assert (chart["state"], chart["applied_filters"]) == ("rendered", 2), (report["slug"], chart)


def test_dashboards_have_agent_and_time_range_filters(site):
    for dashboard in assets("dashboards").values():
        filters = dashboard["metadata"]["native_filter_configuration"]
        kinds = {(f["filterType"], (f["targets"][0].get("column") or {}).get("name")) for f in filters}
        assert ("filter_time", None) in kinds, dashboard["slug"]
        assert ("filter_select", "agent_name") in kinds, dashboard["slug"]


def test_reader_role_reads_the_marts_and_nothing_else(site):
    url = reader_url(site.database_url, "bagula_superset_reader", site.reader_password)
    with psycopg.connect(url, autocommit=True) as conn:
        # Tables dbt created after `bagula superset init`: readable through default privileges.
        (count,), = conn.execute("select count(*) from marts.fct_sessions").fetchall()
        assert count > 0
        assert conn.execute("select count(*) from marts.fct_anomalies").fetchone()[0] > 0
        for forbidden in ("public.api_keys", "public.agent_sessions", "public.projects", "staging.stg_bagula__agent_sessions"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"select 1 from {forbidden} limit 1")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("delete from marts.fct_sessions")
        # Read-only is only the role's default; without it, the missing privileges still say no.
        conn.execute("set default_transaction_read_only = off")
        for statement in ("delete from marts.fct_sessions", "create table marts.scratch (x int)",
                          "create table public.scratch (x int)", "drop view marts.fct_anomalies"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_marts_stay_readable_after_a_full_refresh(site):
    url = reader_url(site.database_url, "bagula_superset_reader", site.reader_password)
    tables = [name for (name,) in pg_rows(
        site.database_url, "select table_name from information_schema.tables where table_schema = 'marts' order by 1")]
    before = {t: pg_rows(site.database_url, f"select count(*) from marts.{t}")[0][0] for t in tables}
    oids = pg_rows(site.database_url, "select 'marts.fct_sessions'::regclass::oid")

    assert transform(site.database_url, full_refresh=True), "dbt build --full-refresh failed"

    assert pg_rows(site.database_url, "select 'marts.fct_sessions'::regclass::oid") != oids  # really new tables
    with psycopg.connect(url) as conn:
        after = {t: conn.execute(f"select count(*) from marts.{t}").fetchone()[0] for t in tables}
    assert after == before


def test_exported_assets_are_the_repository_files(site, tmp_path):
    exported = run_cli(["superset", "export", "--to", str(tmp_path)], site.database_url, site.data_dir)

    assert exported.returncode == 0, exported.stderr[-3000:]
    repo_files = sorted(p.relative_to(ASSETS_DIR).as_posix() for p in ASSETS_DIR.rglob("*.yaml"))
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.yaml"))
    assert written == repo_files
    for name in repo_files:
        assert (tmp_path / name).read_text() == (ASSETS_DIR / name).read_text(), name


def test_admin_password_setting_resets_a_lost_password(site):
    new_password = "a-new-admin-password-" + uuid.uuid4().hex[:8]
    reset = run_cli(["superset", "init"], site.database_url, site.data_dir, BAGULA_SUPERSET_ADMIN_PASSWORD=new_password)
    assert reset.returncode == 0, reset.stderr[-3000:]
    assert "password reset" in reset.stdout and new_password not in reset.stdout
    old_login = httpx.post(f"{site.base_url}/api/v1/security/login", json={
        "username": "admin", "password": site.admin_password, "provider": "db"})
    assert old_login.status_code == 401
    site.admin_password = new_password
    with site.api() as client:
        assert client.get("/api/v1/me/").status_code == 200


def test_superset_refuses_to_start_without_its_secrets(site, tmp_path):
    python = superset_python(site.superset)
    config = SUPERSET_DIR / "superset_config.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAGULA_SUPERSET_")}
    loaded = subprocess.run([str(python), "-c", f"exec(open({str(config)!r}).read())"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert loaded.returncode != 0 and "BAGULA_SUPERSET_SECRET_KEY is not set" in loaded.stderr

    # A metadata database of one's own comes with its key: no key is made up for it.
    with pytest.raises(SupersetError, match="BAGULA_SUPERSET_SECRET_KEY"):
        secret_key(Superset(SupersetSettings(metadata_db_url="postgresql://x@db/superset"), tmp_path))
