"""Incidents end to end: a simulated week with two injected faults (a model change, then a
cost spike) goes through the API and the live path a day at a time, beside a clean control
project. The week is two incidents and two opening alerts (plus the spike's resolution), the
control none; the incident API lists, pages, shows, acknowledges and resolves them; a Dagster
backfill of the same days reproduces the live path's verdicts and incidents."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
import pytest

from ingest_api import db
from orchestration.detection.alerts import deliver_alerts
from orchestration.live import LivePath
from orchestration.settings import OrchestrationSettings
from simulator.faults import parse_injection
from simulator.run import generate
from tests.support.services import ApiServer, new_tenant
from tests.support.webhook import Webhook

START = datetime(2026, 5, 4, tzinfo=timezone.utc)
DAYS = 7
START_MS = START.timestamp() * 1000
END_MS = START_MS + DAYS * 86_400_000
# The run: a model change half way through the week, later a cost spike of 5 % of it.
SCENARIOS = {"two-faults": ["model_change@50%", "cost_spike@70%"], "control": []}
AGENTS = ["support", "research", "pipeline"]
SCALE = 0.3
SUPERSET = "https://bagula.example.com/superset-ui"
# The week goes through ingest, dbt and detection five times: minutes on a busy machine.
pytestmark = pytest.mark.timeout(900)


def rows(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def week(pg):
    url = pg.create_database(f"incidents_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    api = ApiServer(url).start()
    webhook = Webhook()
    settings = OrchestrationSettings(database_url=url, alert_webhook_url=webhook.url, alert_attempts=1,
                                     superset_public_url=SUPERSET)
    tenants, truth, by_day = {}, {}, defaultdict(list)
    for name, specs in SCENARIOS.items():
        tenants[name] = tenant = new_tenant(api, url)
        # A third of the simulator's traffic (~1,000 sessions a day per project) is enough
        # evidence for every incident and keeps the week to a few minutes.
        produced = generate(AGENTS, START_MS, END_MS, seed=11, scale=SCALE,
                            injections=[parse_injection(spec, START_MS, END_MS) for spec in specs])
        truth[name] = {p.session["sessionId"]: {f.fault for f in p.faults} for p in produced}
        for p in produced:
            by_day[int((p.session["startTime"] - START_MS) // 86_400_000)].append((name, p.session))
    # Alerts of the faulty project from major on go to its own route (the API's), the rest to the default.
    route = tenants["two-faults"].client.put("/v1/alert-route", json={"webhookUrl": webhook.url,
                                                                       "minSeverity": "major"})
    assert route.status_code == 200, route.text
    live = LivePath(url, settings)
    passes = []
    # A backlog of three days, then a day at a time, each taken by the live path as it comes.
    for days in ([0, 1, 2], [3], [4], [5], [6]):
        batches = defaultdict(list)
        for day in days:
            for name, session in by_day[day]:
                batches[name].append(session)
        for name, sessions in batches.items():
            for i in range(0, len(sessions), 500):
                response = tenants[name].client.post("/v1/sessions/ingest", json={"sessions": sessions[i:i + 500]})
                assert response.status_code == 200, response.text
        while (outcome := live.step()) is not None:
            passes.append(outcome)
    live.close()
    yield {"url": url, "tenants": tenants, "truth": truth, "webhook": webhook, "passes": passes,
           "settings": settings}
    api.stop()
    webhook.close()
    for tenant in tenants.values():
        tenant.client.close()


def incidents(client, path: str = "/v1/incidents", **params) -> list[dict]:
    """Every page of a listing."""
    found, cursor = [], None
    while True:
        response = client.get(path, params={**params, "limit": 2, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["incidents"]
        cursor = page["nextCursor"]
        if cursor is None:
            return found


def test_the_live_path_judged_every_session_once(week):
    sent = sum(len(t) for t in week["truth"].values())
    assert sum(p.detection.judged_sessions for p in week["passes"]) == sent
    assert len(week["passes"]) >= 5


def test_a_week_with_two_faults_is_two_incidents(week):
    found = incidents(week["tenants"]["two-faults"].client)
    paged = [i for i in found if i["status"] != "pending"]
    assert sorted(i["kind"] for i in paged) == ["cost_spike", "model_change"]
    by_kind = {i["kind"]: i for i in paged}
    spike, change = by_kind["cost_spike"], by_kind["model_change"]
    # The spike ended and its incident resolved itself; the model change goes on.
    assert (spike["status"], spike["resolution"]) == ("resolved", "quiet")
    assert change["status"] == "open" and change["resolvedAt"] is None
    truth = week["truth"]["two-faults"]
    faulty = {kind: {s for s, faults in truth.items() if kind in faults} for kind in ("cost_spike", "model_change")}
    for kind, incident in by_kind.items():
        assert set(incident["exampleSessionIds"]) & faulty[kind], f"{kind}: its examples are its faulty sessions"
        assert incident["affectedSessions"] >= 0.8 * len(faulty[kind])
        assert 0 < incident["trafficShare"] <= 1
        assert incident["firstSeen"] <= incident["openedAt"] <= incident["lastSeen"]
        assert incident["exampleSessions"][0]["href"] == f"/v1/sessions/{incident['exampleSessionIds'][0]}"
    # Opened at the start, not at the peak: within minutes of the first faulty session.
    with psycopg.connect(week["url"]) as conn:
        first_spike = conn.execute("select min(start_time) from agent_sessions where session_id = any(%s::uuid[])",
                                   (sorted(faulty["cost_spike"]),)).fetchone()[0]
    assert spike["openedAt"] - first_spike.timestamp() * 1000 <= 5 * 60_000
    # The summaries say what changed, in numbers.
    assert "x" in spike["summary"] and any(c.isdigit() for c in spike["summary"])
    assert "->" in change["summary"] or "→" in change["summary"]


def test_the_clean_control_opens_nothing(week):
    found = incidents(week["tenants"]["control"].client)
    assert [i for i in found if i["status"] != "pending"] == []


def test_two_opening_alerts_and_the_spikes_resolution(week):
    texts = week["webhook"].texts()
    opened = [t for t in texts if "[OPENED" in t]
    assert len(opened) == 2, texts
    assert any("model_change" in t for t in opened) and any("cost_spike" in t for t in opened)
    assert [t for t in texts if "[RESOLVED" in t and "cost_spike" in t], texts
    assert not [t for t in texts if "[ESCALATED" in t]
    ids = [alert_id for alert_id, _ in week["webhook"].received]
    assert len(ids) == len(set(ids)), "each alert once"
    # A delivery pass finds nothing left to send.
    with psycopg.connect(week["url"], autocommit=True) as conn:
        assert deliver_alerts(conn, week["settings"])["delivered"] == 0


def test_each_opening_alert_links_to_the_agents_incidents_and_an_example_session(week):
    client = week["tenants"]["two-faults"].client
    by_kind = {i["kind"]: i for i in incidents(client)}
    for _, body in week["webhook"].received:
        if "[OPENED" not in body["text"]:
            continue
        incident = next(i for kind, i in by_kind.items() if kind in body["text"])
        urls = re.findall(r"<([^|>]+)\|", body["blocks"][-1]["text"]["text"])
        filters = {urlsplit(u).path: unquote(parse_qs(urlsplit(u).query)["native_filters"][0]) for u in urls}
        assert set(filters) == {"/superset-ui/superset/dashboard/incidents/",
                                "/superset-ui/superset/dashboard/regressions-and-anomalies/",
                                "/superset-ui/superset/dashboard/session-detail/"}
        assert f"val:!('{incident['agentName']}')" in filters["/superset-ui/superset/dashboard/incidents/"]
        first = datetime.fromtimestamp(incident["firstSeen"] / 1000, timezone.utc)
        assert f"{first:%Y-%m-%dT%H}:00:00 : " in filters["/superset-ui/superset/dashboard/incidents/"]
        assert f"val:!('{incident['exampleSessionIds'][0]}')" in filters["/superset-ui/superset/dashboard/session-detail/"]


def test_an_incident_shows_its_events_and_pages_its_verdicts(week):
    client = week["tenants"]["two-faults"].client
    [spike] = incidents(client, kind="cost_spike")
    detail = client.get(f"/v1/incidents/{spike['incidentId']}").json()
    assert [e["event"] for e in detail["events"]] == ["opened", "resolved"]
    verdicts, cursor = list(detail["verdicts"]), detail["verdictsNextCursor"]
    while cursor:
        page = client.get(f"/v1/incidents/{spike['incidentId']}/verdicts", params={"cursor": cursor, "limit": 7})
        assert page.status_code == 200, page.text
        verdicts += page.json()["verdicts"]
        cursor = page.json()["nextCursor"]
    assert len(verdicts) == detail["verdictCount"]
    assert len({(v["sessionId"], v["verdictType"]) for v in verdicts}) == len(verdicts)
    assert {v["sessionId"] for v in verdicts} >= set(detail["exampleSessionIds"])
    starts = [v["sessionStartedAt"] for v in verdicts]
    assert starts == sorted(starts, reverse=True)
    # Per-session verdicts stay available for drill-down: each is one of the agent's anomalies or regressions.
    anomaly = next(v for v in verdicts if v["verdictType"] == "cost_spike")
    listed = client.get(f"/v1/agents/{spike['agentName']}/anomalies", params={"type": "cost_spike", "limit": 500})
    assert anomaly["verdictId"] in {a["id"] for a in listed.json()["anomalies"]}


def test_incident_lists_filter_and_stay_in_their_project(week):
    client = week["tenants"]["two-faults"].client
    [change] = incidents(client, kind="model_change")
    agent = change["agentName"]
    assert [i["incidentId"] for i in incidents(client, f"/v1/agents/{agent}/incidents", kind="model_change")] \
        == [change["incidentId"]]
    assert all(i["status"] == "open" for i in incidents(client, status="open"))
    assert incidents(client, since=END_MS + 86_400_000) == []
    assert incidents(client, agent="no-such-agent") == []
    other = week["tenants"]["control"].client
    assert other.get(f"/v1/incidents/{change['incidentId']}").status_code == 404
    assert other.post(f"/v1/incidents/{change['incidentId']}/resolve").status_code == 404
    bad = client.get("/v1/incidents", params={"status": "closed", "cursor": "nope"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"/v1/incidents/{uuid.uuid4()}").status_code == 404


def test_a_dagster_backfill_reproduces_the_live_paths_verdicts_and_incidents(week):
    from orchestration import pipeline

    url = week["url"]
    project = week["tenants"]["two-faults"].project_id
    verdict_sql = ("select session_id, anomaly_type, severity, score, explanation, details::text from anomalies"
                   " where project_id = %s order by 1, 2")
    incident_sql = ("select incident_id, kind, status, first_seen, last_seen, opened_at, resolved_at, peak_severity,"
                    " affected_sessions, verdict_count, summary from incidents where project_id = %s order by 1")
    member_sql = "select incident_id, session_id, verdict_type from incident_members where project_id = %s order by 1, 2, 3"
    event_sql = ("select event_id, incident_id, event, severity, at, summary, affected_sessions from incident_events"
                 " where project_id = %s order by 1")
    queries = (verdict_sql, incident_sql, member_sql, event_sql)
    live = [rows(url, sql, (project,)) for sql in queries]
    alerts_before = rows(url, "select count(*) from alerts")
    with psycopg.connect(url) as conn:
        for table in ("incident_members", "incident_events", "incidents", "anomalies", "regressions"):
            conn.execute(f"delete from {table} where project_id = %s", (project,))
        conn.execute("delete from pipeline_watermarks where name = %s", (f"incidents:{project}",))
    tags, _ = pipeline.plan(url, [(START + timedelta(days=d)).date() for d in range(DAYS)])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BAGULA_DATABASE_URL", url)
        result = pipeline.run_pipeline(tags, quiet=True, detection_only=True)
    assert result.success
    assert [rows(url, sql, (project,)) for sql in queries] == live
    assert rows(url, "select count(*) from alerts") == alerts_before, "the same events: no new alerts"


def test_acknowledging_and_resolving_by_hand(week):
    client = week["tenants"]["two-faults"].client
    [change] = incidents(client, kind="model_change")
    path = f"/v1/incidents/{change['incidentId']}"
    acknowledged = client.post(f"{path}/acknowledge").json()
    assert acknowledged["acknowledgedAt"] and acknowledged["acknowledgedBy"] == str(week["tenants"]["two-faults"].key_id)
    assert client.post(f"{path}/acknowledge").json()["acknowledgedAt"] == acknowledged["acknowledgedAt"]
    assert [i["incidentId"] for i in incidents(client, acknowledged="true")] == [change["incidentId"]]

    resolved = client.post(f"{path}/resolve")
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["status"], body["resolution"]) == ("resolved", "hand")
    assert [e["event"] for e in body["events"]][-1] == "resolved"
    again = client.post(f"{path}/resolve").json()
    assert again["resolvedAt"] == body["resolvedAt"] and len(again["events"]) == len(body["events"])
    # Its opening paged, so its resolution does too, once.
    with psycopg.connect(week["url"], autocommit=True) as conn:
        assert deliver_alerts(conn, week["settings"])["delivered"] == 1
    assert [t for t in week["webhook"].texts() if "[RESOLVED" in t and "model_change" in t]
