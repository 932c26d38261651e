"""Superset over the marts: kept as code, imported idempotently, every chart answering, checked in Chromium;
a session opened from a table and found by a phrase; each project's users seeing their project only.

One Superset for the module: `bagula superset init` on a new database (before the marts
exist, as `bagula run` does on a fresh install), then `bagula simulate` (project superset-demo)
and a second project made with `bagula keys create` (whose sessions include one with PHRASE in
a tool result), `bagula superset sync-projects` and `bagula pipeline run` (marts and real
verdicts) fill it, then Superset serves it. Needs .venv-superset and Debian's chromium
(scripts/ensure-superset.sh --browser, which scripts/test.sh runs).
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

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
from simulator.samples import make_batch
from tests.support.services import ApiServer
from tests.support.superset import (
    ARTIFACTS,
    OTHER_AGENT,
    OTHER_PROJECT,
    PHRASE,
    RESOLVE_SOME_SQL,
    SupersetSite,
    assets,
    chart_uuid,
    dashboard_charts,
    dashboard_url,
    metadata_snapshot,
    pg_rows,
    run_cli,
    session_detail_url,
    shown_admin_password,
)

# The first test carries the setup: init, simulate, pipeline run, Superset start (minutes on a busy machine).
pytestmark = pytest.mark.timeout(2400)


def other_project_sessions(now_ms: int) -> list[dict]:
    """The second project's sessions (its own agent), one with PHRASE in a tool result."""
    sessions = make_batch(random.Random(4), 12, start_ms=now_ms - 6 * 3_600_000, turns=2, agent_name=OTHER_AGENT)
    sessions[5]["turns"][1]["agentResponse"]["toolCalls"][0].update(
        result={"note": PHRASE, "order": "ORD48213"}, error=None)
    return sessions


def fill_with_simulated_traffic(database_url: str, data_dir, tmp_dir) -> dict[str, str]:
    api = ApiServer(database_url, BAGULA_API_WORKERS="1").start()  # one process: starts fastest
    try:
        with psycopg.connect(database_url) as conn:
            key = keys.create_key(conn, "superset-demo").secret
        simulate = subprocess.run(
            [sys.executable, "-m", "bagula", "simulate", "--days", "2", "--seed", "1", "--api-key", key,
             "--endpoint", api.base_url, "--no-progress", "--inject", "cost_spike@50%", "--inject", "skill_bloat@70%",
             "--ground-truth", str(tmp_dir / "truth.jsonl")],
            capture_output=True, text=True, timeout=1500,  # two days of traffic: 7-15 min on a loaded machine
        )
        assert simulate.returncode == 0, simulate.stderr[-3000:]
        # A project made as an operator makes one: its Superset role comes with it.
        created = run_cli(["keys", "create", "--project", OTHER_PROJECT], database_url, data_dir)
        assert created.returncode == 0, created.stderr[-3000:]
        other = other_project_sessions(int(time.time() * 1000))
        sent = httpx.post(f"{api.base_url}/v1/sessions/ingest", json={"sessions": other}, timeout=60,
                          headers={"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"})
        assert sent.status_code == 200, sent.text
    finally:
        api.stop()
    # The first project was made without the command: the sync gives it its role.
    synced = run_cli(["superset", "sync-projects"], database_url, data_dir)
    assert synced.returncode == 0, synced.stderr[-3000:]
    # The marts and real verdicts, as the platform's sensor would make them.
    pipeline = subprocess.run([sys.executable, "-m", "bagula", "pipeline", "run"],
                              env={**os.environ, "BAGULA_DATABASE_URL": database_url},
                              capture_output=True, text=True, timeout=600)
    assert pipeline.returncode == 0, pipeline.stderr[-3000:]
    with psycopg.connect(database_url) as conn:
        conn.execute(RESOLVE_SOME_SQL)
    return {"keys_create_output": created.stderr, "sync_projects_output": synced.stdout,
            "needle_id": other[5]["sessionId"]}


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

    filled = fill_with_simulated_traffic(database_url, data_dir, tmp_path_factory.mktemp("simulate"))

    port = free_port()
    superset = Superset.of(PlatformSettings(data_dir=data_dir), SupersetSettings())
    argv, env = superset_serve_command(superset, port)
    log_path = data_dir / "superset-server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base_url, server, log_path)
        yield SupersetSite(database_url, data_dir, base_url, "admin", admin_password, first.stdout, superset, **filled)
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
    assert titles == {"Agent overview", "Cost tracking", "Tool usage", "Regressions and anomalies", "Session explorer",
                      "Session detail", "Incidents"}


def detail_charts() -> set[str]:
    """The Session detail dashboard's charts: they show one session, chosen by its filter."""
    return dashboard_charts(next(d for d in assets("dashboards").values() if d["slug"] == "session-detail"))


def chart_data(client, chart_id: int, session_id: str | None = None) -> list[dict]:
    """A chart's queries' results, as a dashboard asks for them (with its Session filter set)."""
    if session_id is None:
        answer = client.get(f"/api/v1/chart/{chart_id}/data/")
    else:
        context = json.loads(client.get(f"/api/v1/chart/{chart_id}").json()["result"]["query_context"])
        chosen = {"col": "session_id", "op": "IN", "val": [session_id]}
        context["form_data"]["extra_form_data"] = {"filters": [chosen]}
        for query in context["queries"]:
            query["filters"].append(chosen)
        answer = client.post("/api/v1/chart/data", json=context)
    assert answer.status_code == 200, (chart_id, answer.text[:500])
    return answer.json()["result"]


def test_every_chart_returns_rows_without_error(site):
    # The detail charts show a session chosen: one with a verdict, one with a parent.
    (judged,), = pg_rows(site.database_url, "select session_id::text from anomalies order by anomaly_id limit 1")
    (child,), = pg_rows(site.database_url, "select session_id::text from agent_sessions "
                                           "where parent_session_id is not null order by session_id limit 1")
    chosen = {name: judged for name in detail_charts()} | {"Related sessions": child}
    with site.api() as client:
        charts = client.get("/api/v1/chart/", params={"q": "(page_size:100,columns:!(id,uuid,slice_name))"})
        charts.raise_for_status()
        results = {}
        for chart in charts.json()["result"]:
            answer = chart_data(client, chart["id"], chosen.get(chart["slice_name"]))
            for query in answer:
                assert query["status"] == "success" and not query["error"], (chart["slice_name"], query["error"])
                assert query["rowcount"] > 0, f"{chart['slice_name']}: no rows\n{query['query']}"
            results[chart["uuid"]] = answer[0]["data"]
        # Without a session chosen, the detail charts show nothing (rather than every session at once).
        for chart in charts.json()["result"]:
            if chart["slice_name"] in detail_charts():
                assert [q["rowcount"] for q in chart_data(client, chart["id"])] == [0], chart["slice_name"]
    assert len(results) == len(assets("charts"))

    # A few figures against the raw tables the marts were built from.
    (sessions,), = pg_rows(site.database_url, "select count(*) from agent_sessions")
    (cost,), = pg_rows(site.database_url, "select sum(cost_usd) from llm_calls")
    (open_items,), = pg_rows(site.database_url, "select (select count(*) from anomalies where not resolved) "
                                                "+ (select count(*) from regressions where not resolved)")
    assert results[chart_uuid("Sessions")] == [{"sessions": sessions}]
    assert Decimal(str(results[chart_uuid("Total cost")][0]["cost_usd"])) == pytest.approx(cost, rel=Decimal('1e-9'))
    assert results[chart_uuid("Open items")] == [{"open_items": open_items}]
    (open_incidents,), = pg_rows(site.database_url, "select count(*) from incidents where status = 'open'")
    assert results[chart_uuid("Open incidents")] == [{"open_incidents": open_incidents}]
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
    # The time range filter's default (the last 7 days) applies to every chart; Session detail
    # has none (a session is shown whenever it started) and no session chosen here.
    applied = 0 if slug == "session-detail" else 1
    assert {c["name"]: c["applied_filters"] for c in report["charts"]} == {c["name"]: applied for c in report["charts"]}
    assert (ARTIFACTS / f"{slug}.png").stat().st_size > 10_000


def test_agent_filter_narrows_every_chart_of_a_dashboard_built_on_several_marts(site):
    # Agent overview and Cost tracking read three marts each; the filter targets one of them
    # and must apply, by column name, to the charts of the others too.
    reports = site.check_in_browser(["agent-overview", "cost-tracking"], "--agent", "writer-agent")

    for report in reports:
        assert report["charts"] and not report["failed_requests"]
        for chart in report["charts"]:
            assert (chart["state"], chart["applied_filters"]) == ("rendered", 2), (report["slug"], chart)


def test_dashboards_have_agent_time_range_and_project_name_filters(site):
    projects = next(d for d in assets("datasets").values() if d["table_name"] == "dim_projects")
    for dashboard in assets("dashboards").values():
        filters = dashboard["metadata"]["native_filter_configuration"]
        kinds = {(f["filterType"], (f["targets"][0].get("column") or {}).get("name")) for f in filters}
        if dashboard["slug"] == "session-detail":
            [session] = filters  # one session, always: a required single choice
            assert (session["id"], session["targets"][0]["column"]["name"]) == (
                "NATIVE_FILTER-session-detail-session", "session_id")
            assert session["controlValues"]["enableEmptyFilter"] and not session["controlValues"]["multiSelect"]
            continue
        assert ("filter_time", None) in kinds, dashboard["slug"]
        assert ("filter_select", "agent_name") in kinds, dashboard["slug"]
        # Projects by name: the filter lists dim_projects' names and applies to every chart by
        # column name (every dataset has project_name).
        [project] = [f for f in filters if f["id"].endswith("-project")]
        assert project["targets"] == [{"column": {"name": "project_name"}, "datasetUuid": projects["uuid"]}]
    for dataset in assets("datasets").values():
        assert {"project_id", "project_name"} <= {c["column_name"] for c in dataset["columns"]}, dataset["table_name"]


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
        # Chart queries are never JIT-compiled (compiling cost more than running them).
        assert conn.execute("show jit").fetchone()[0] == "off"
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


# --- sessions: from a table to one session, by a phrase; per-project access ----------------


def test_every_project_gets_a_role_that_sees_only_its_rows_in_every_dataset(site):
    projects = dict(pg_rows(site.database_url, "select name, project_id::text from projects"))
    with sqlite3.connect(site.metadata_db) as conn:
        datasets = {i for (i,) in conn.execute("select id from tables")}
        filters = conn.execute(
            "select f.name, f.clause, f.filter_type, f.group_key, r.name, "
            "(select group_concat(t.table_id) from rls_filter_tables t where t.rls_filter_id = f.id) "
            "from row_level_security_filters f join rls_filter_roles fr on fr.rls_filter_id = f.id "
            "join ab_role r on r.id = fr.role_id").fetchall()

    assert set(projects) == {"superset-demo", OTHER_PROJECT}
    by_role = {role: (name, clause, kind, group, {int(t) for t in tables.split(",")})
               for name, clause, kind, group, role, tables in filters}
    assert set(by_role) == {f"Project {name}" for name in projects}
    for name, project_id in projects.items():
        assert by_role[f"Project {name}"] == (f"bagula project {project_id}", f"project_id = '{project_id}'",
                                              "Regular", "project_id", datasets)
    # The new project got its role from `bagula keys create`; the other from sync-projects.
    assert f"'Project {OTHER_PROJECT}'" in site.keys_create_output
    assert "'Project superset-demo'" in site.sync_projects_output


@pytest.fixture(scope="module")
def project_viewer(site) -> tuple[str, str]:
    """A user granted the first project only."""
    username, password = "demo-viewer", "viewer-" + uuid.uuid4().hex[:12]
    site.create_user(username, "Project superset-demo", password)
    return username, password


def test_a_project_user_reads_only_their_project_in_every_chart(site, project_viewer):
    (mine,), = pg_rows(site.database_url, "select s.session_id::text from agent_sessions s join projects p "
                                          "using (project_id) where p.name = 'superset-demo' and s.parent_session_id "
                                          "is not null order by 1 limit 1")
    every = [OTHER_AGENT, OTHER_PROJECT, site.needle_id]
    with site.api() as admin:
        charts = admin.get("/api/v1/chart/", params={"q": "(page_size:100,columns:!(id,slice_name))"}).json()["result"]
        agents = next(c for c in charts if c["slice_name"] == "Agents")
        # The admin sees the other project (so the check below can fail).
        assert OTHER_AGENT in json.dumps(chart_data(admin, agents["id"]))
        theirs = next(c for c in charts if c["slice_name"] == "Timeline")
        assert PHRASE in json.dumps(chart_data(admin, theirs["id"], site.needle_id))

    with site.api(*project_viewer) as viewer:
        seen = {}
        for chart in charts:
            answer = json.dumps(chart_data(viewer, chart["id"], mine if chart["slice_name"] in detail_charts() else None))
            seen[chart["slice_name"]] = [word for word in every if word in answer]
            assert '"status": "success"' in answer, (chart["slice_name"], answer[:500])
        # Even asked for the other project's session by id, the detail shows nothing of it.
        other_detail = json.dumps(chart_data(viewer, theirs["id"], site.needle_id))
    assert seen == {chart["slice_name"]: [] for chart in charts}
    assert PHRASE not in other_detail and '"rowcount": 0' in other_detail


def test_a_project_user_sees_no_other_project_on_any_dashboard_in_chromium(site, project_viewer):
    username, password = project_viewer
    slugs = [d["slug"] for d in assets("dashboards").values()]

    reports = site.check_in_browser(slugs, "--user", username, "--forbid", OTHER_AGENT, "--forbid", OTHER_PROJECT,
                                    "--forbid", "superset-demo", password=password)

    assert [r["slug"] for r in reports] == slugs
    for report in reports:
        assert all(c["state"] == "rendered" for c in report["charts"]), report
        assert not report["failed_requests"] and report["chart_answers"] > 0, report
        # Their own project's name reaches them (the check sees what the charts receive) ...
        assert report["slug"] == "session-detail" or {"word": "superset-demo", "where": "chart data"} in \
            report["forbidden_seen"], report
        # ... and nothing of the other project does.
        assert {s["word"] for s in report["forbidden_seen"]} <= {"superset-demo"}, report
        assert (ARTIFACTS / f"{report['slug']}--as-{username}.png").exists()


@pytest.fixture(scope="module")
def incidents(site) -> list[dict]:
    """The incidents the Incidents dashboard shows by default (active in the last 7 days), in the order
    it must show them (open first, then pending, then resolved; the worst, then the latest first),
    computed here from the incidents table."""
    with psycopg.connect(site.database_url) as conn:
        cur = conn.execute("""
            select agent_name, kind, status, summary, example_session_ids[1]::text as example, first_seen, last_seen
            from incidents
            where status <> 'discarded' and last_seen >= now() - interval '7 days'
            order by status = 'open' desc, status = 'pending' desc,
                     array_position(array['minor', 'major', 'critical'], peak_severity::text) desc, last_seen desc""")
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def incident_hours(incident: dict) -> tuple[datetime, datetime]:
    """The hours an incident's links show: from its first session's hour to the end of its latest's."""
    return (incident["first_seen"].replace(minute=0, second=0, microsecond=0),
            incident["last_seen"].replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))


@pytest.fixture(scope="module")
def journeys(site, incidents) -> dict[str, dict]:
    """What an engineer clicks through, in one browser session: explorer -> session; a phrase ->
    session; an alert's URL -> session; incident -> session, incident -> its agent's verdicts ->
    session; an incident alert's URL -> the incident."""
    detail_url = session_detail_url(site.base_url, site.needle_id)
    since, until = incident_hours(incidents[0])
    incidents_url = dashboard_url(site.base_url, "incidents", agent=incidents[0]["agent_name"], since=since, until=until)
    steps = site.check_in_browser([], "--journey", f'"{PHRASE}"', "--detail-url", detail_url, "--incidents",
                                  "--incidents-url", incidents_url)
    return {step["step"]: step for step in steps}


def test_from_the_explorer_to_a_session_and_to_a_session_by_a_phrase_in_chromium(site, journeys):
    link, search, url = journeys["link"], journeys["search"], journeys["url"]

    # Click a session id in Recent sessions: its detail, every chart rendered, shows its turns,
    # every LLM call's model and every tool call's name and result (or error).
    assert link["title"] == "Session detail" and all(c["state"] == "rendered" for c in link["charts"])
    opened = link["session_id"]
    (newest,), = pg_rows(site.database_url, "select session_id::text from agent_sessions "
                                            "order by start_time desc, session_id desc limit 1")
    assert opened == newest  # the explorer lists the newest session first
    # Each tool call's name, and the first words of its result (or its error).
    calls = pg_rows(site.database_url, """
        select tool_name, coalesce((select leaf #>> '{}' from jsonb_path_query(result, 'strict $.**') as leaf
                                    where jsonb_typeof(leaf) = 'string' limit 1), error)
        from tool_calls where session_id = %s""", (opened,))
    models = pg_rows(site.database_url, "select model from llm_calls where session_id = %s", (opened,))
    (turns,), = pg_rows(site.database_url, "select count(*) from session_turns where session_id = %s", (opened,))
    timeline = link["texts"]["Timeline"]
    assert models and all(model in timeline for (model,) in models)
    for tool, output in calls:
        assert tool in timeline and output and output[:40] in timeline
    assert opened in link["texts"]["Session"]
    assert len(re.findall(r"^\d+\t20\d\d-", link["texts"]["Turns"], re.M)) == turns

    # Search for a phrase of one session's tool result: it comes first, and opens with it.
    assert search["result_rows"][0].split("\t")[-2] == site.needle_id == search["session_id"]
    assert OTHER_AGENT in search["result_rows"][0]
    assert PHRASE in search["texts"]["Timeline"]
    assert (ARTIFACTS / "session-explorer--search.png").exists() and (ARTIFACTS / "session-detail--search.png").exists()

    # The URL alerts build (docs/superset.md) opens the same session.
    assert site.needle_id in url["texts"]["Session"] and OTHER_AGENT in url["texts"]["Session"]
    assert PHRASE in url["texts"]["Timeline"]


def test_from_an_incident_to_its_session_and_its_agents_verdicts_in_chromium(site, incidents, journeys):
    incident_page, verdicts, verdict_session = (journeys[s] for s in (
        "incident-session", "incident-verdicts", "verdict-session"))
    assert incidents and incidents[0]["status"] == "open", incidents[:3]  # the simulated faults opened incidents
    first = incidents[0]
    since, until = incident_hours(first)

    # Open incidents first, the worst and latest first, as computed from the incidents table.
    rows = incident_page["incident_rows"]
    assert [r.split("\t")[0] for r in rows] == [i["status"] for i in incidents][:25]  # the first page
    assert first["agent_name"] in rows[0] and first["summary"] in rows[0], rows[0]
    assert all(c["state"] == "rendered" for c in incident_page["incident_charts"])
    assert (ARTIFACTS / "incidents--journey.png").exists()

    # Its example session: the Session detail with it chosen (the link docs/superset.md gives).
    assert incident_page["session_id"] == first["example"] and incident_page["title"] == "Session detail"
    assert unquote(incident_page["href"]) == unquote(session_detail_url(site.base_url, first["example"]))
    assert all(c["state"] == "rendered" for c in incident_page["charts"])
    assert first["example"] in incident_page["texts"]["Session"]

    # Its agent: Regressions and anomalies filtered on it and the incident's hours (both filters
    # applied to every chart), the open verdicts of those hours listed, newest first.
    assert verdicts["agent"] == first["agent_name"] and verdicts["title"] == "Regressions and anomalies"
    assert unquote(verdicts["href"]) == unquote(dashboard_url(
        site.base_url, "regressions-and-anomalies", agent=first["agent_name"], since=since, until=until))
    assert all((c["state"], c["applied_filters"]) == ("rendered", 2) for c in verdicts["charts"]), verdicts["charts"]
    listed = pg_rows(site.database_url, """
        select session_id::text from (
            select session_id, session_started_at from anomalies where not resolved and agent_name = %(agent)s
            union all
            select session_id, session_started_at from regressions where not resolved and agent_name = %(agent)s) v
        where session_started_at >= %(since)s and session_started_at < %(until)s
        order by session_started_at desc""", {"agent": first["agent_name"], "since": since, "until": until})
    assert listed and len(verdicts["verdict_rows"]) == min(len(listed), 25)
    assert all(first["agent_name"] in row for row in verdicts["verdict_rows"])

    # A session id of the verdict list opens its Session detail.
    assert verdict_session["session_id"] == listed[0][0] and verdict_session["title"] == "Session detail"
    assert listed[0][0] in verdict_session["texts"]["Session"]
    assert unquote(verdict_session["href"]) == unquote(session_detail_url(site.base_url, listed[0][0]))


def test_an_incident_alerts_link_opens_the_incidents_of_its_agent_and_hours_in_chromium(site, incidents, journeys):
    first = incidents[0]
    since, until = incident_hours(first)
    shown = journeys["incidents-url"]

    assert shown["title"] == "Incidents"
    assert all((c["state"], c["applied_filters"]) == ("rendered", 2) for c in shown["charts"]), shown["charts"]
    # This agent's incidents active in those hours, the alerted one among them.
    expected = [i for i in incidents if i["agent_name"] == first["agent_name"] and i["last_seen"] >= since
                and i["last_seen"] < until]
    assert len(shown["incident_rows"]) == len(expected)
    assert any(first["summary"] in row for row in shown["incident_rows"])
    assert all(first["agent_name"] in row for row in shown["incident_rows"])
