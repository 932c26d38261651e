"""Erasure: sessions carrying a unique marker string go through the SDK path and the OpenTelemetry
path, the marts are built, verdicts, incidents and alerts point at them; after the erasure no
table in any schema of the database (raw, staging, marts, verdicts, audit, TimescaleDB's chunks)
holds the marker, while the project's other sessions are untouched. Erasing is idempotent,
audited without content, and an erased session sent again is not stored again."""

from __future__ import annotations

import copy
import json
import random
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from ingest_api import db
from ingest_api.store import erasure
from orchestration import watermark
from simulator.samples import make_batch
from tests.support.cli import bagula
from tests.support.services import INGEST, ApiServer, new_tenant, wait_for

HOUR_MS = 3_600_000
# The marts' build takes minutes on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(1500)
# The models only: their data tests are dbt's business (tests/orchestration/test_transform.py).
MODELS_ONLY = ("--exclude-resource-type", "test", "--exclude-resource-type", "unit_test")


def marked(session: dict, marker: str, user: str | None = None) -> dict:
    """The session with the marker in every free-text field and payload it has."""
    s = copy.deepcopy(session)
    s["initialRequest"] = f"my email is {marker}@example.com, please help"
    s["metadata"] = {**s["metadata"], "note": f"ticket {marker}"}
    s["userId"] = user or s["userId"]
    s["finalOutcome"]["result"] = f"resolved for {marker}"
    for turn in s["turns"]:
        turn["trigger"]["content"] = f"user says {marker}"
        turn["userFeedback"] = {"comment": f"thanks {marker}"}
        for call in turn["llmCalls"]:
            call["messages"][1]["content"] = f"question from {marker}"
            call["response"]["content"] = f"answer to {marker}"
        turn["agentResponse"]["message"] = f"reply to {marker}"
        for tool in turn["agentResponse"]["toolCalls"]:
            tool["arguments"] = {"query": f"orders of {marker}"}
            tool["result"] = {"items": [f"order for {marker}"]}
    return s


def scan(url: str, marker: str) -> dict[str, int]:
    """Rows holding the marker, per table or view, over every schema of the database but
    PostgreSQL's own catalogs: each row cast to text, all its columns included."""
    found = {}
    with psycopg.connect(url, autocommit=True) as conn:
        relations = conn.execute(
            """
            select table_schema, table_name from information_schema.tables
            where table_schema not in ('pg_catalog', 'information_schema') and table_schema not like 'pg_toast%%'
            order by 1, 2
            """
        ).fetchall()
        assert len(relations) > 40
        for schema, table in relations:
            count = conn.execute(
                f'select count(*) from "{schema}"."{table}" r where strpos(r::text, %s) > 0', (marker,)
            ).fetchone()[0]
            if count:
                found[f"{schema}.{table}"] = count
    return found


def otlp_session(api: ApiServer, key: str, marker: str, user: str) -> str:
    """One conversation through the OpenTelemetry SDK: an LLM span and a failing tool span,
    with the marker in messages, arguments, an event and a status message."""
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-agent"}))
    provider.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=api.base_url + "/v1/traces", headers={"Authorization": f"Bearer {key}"})
        )
    )
    tracer = provider.get_tracer("test")
    conversation = f"conv-{uuid.uuid4().hex[:8]}"
    with tracer.start_as_current_span("invoke_agent otel-agent") as root:
        root.set_attributes(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.conversation.id": conversation,
                "user.id": user,
                "gen_ai.agent.name": "otel-agent",
            }
        )
        with tracer.start_as_current_span("chat gpt-4o") as llm:
            llm.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 12,
                    "gen_ai.usage.output_tokens": 5,
                    "gen_ai.input.messages": json.dumps(
                        [{"role": "user", "parts": [{"type": "text", "content": f"find orders of {marker}"}]}]
                    ),
                    "gen_ai.output.messages": json.dumps(
                        [{"role": "assistant", "parts": [{"type": "text", "content": f"orders of {marker} found"}]}]
                    ),
                }
            )
            llm.add_event("gen_ai.user.message", {"content": f"event text {marker}"})
        with tracer.start_as_current_span("execute_tool lookup") as tool:
            tool.set_attributes(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "lookup",
                    "gen_ai.tool.call.arguments": json.dumps({"who": marker}),
                }
            )
            tool.set_status(Status(StatusCode.ERROR, f"no orders for {marker}"))
    provider.shutdown()
    return conversation


@pytest.fixture(scope="module")
def platform(pg) -> Iterator[dict]:
    url = pg.create_database(f"erasure_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    api = ApiServer(
        url,
        BAGULA_API_WORKERS="1",
        BAGULA_OTLP_SESSION_QUIET_S="0.5",
        BAGULA_OTLP_ASSEMBLE_INTERVAL_S="0.1",
        BAGULA_OTLP_SESSION_MAX_WAIT_S="5",
    ).start()
    tenant = new_tenant(api, url)
    now_ms = int(time.time() * 1000)
    rng = random.Random(16)
    markers = {name: f"zq{name}{uuid.uuid4().hex[:10]}" for name in ("one", "user", "range", "keep")}
    user = f"user-{markers['user']}"
    one = marked(make_batch(rng, 1, start_ms=now_ms - 5 * HOUR_MS)[0], markers["one"])
    # The parent of a kept session: erasing it must leave its child (and the link's other side) alone.
    of_user = [marked(s, markers["user"], user) for s in make_batch(rng, 3, start_ms=now_ms - 4 * HOUR_MS)]
    in_range = [
        marked(s, markers["range"]) for s in make_batch(rng, 3, start_ms=now_ms - 3 * HOUR_MS, agent_name="range-agent")
    ]
    kept = [marked(s, markers["keep"]) for s in make_batch(rng, 4, start_ms=now_ms - 2 * HOUR_MS)]
    kept[0]["parentSessionId"] = one["sessionId"]
    # Same agent, just outside the range: kept.
    kept[1]["agentName"] = "range-agent"
    response = tenant.client.post(INGEST, json={"sessions": [one, *of_user, *in_range, *kept]})
    assert response.status_code == 200 and response.json()["stored"] == 11, response.text
    conversation = otlp_session(api, tenant.key, markers["user"], user)
    with psycopg.connect(url, autocommit=True) as conn:
        otlp_id = wait_for(
            lambda: (
                conn.execute(
                    "select session_id from otlp_sessions where project_id = %s and session_key = %s and outcome = 'stored'",
                    (tenant.project_id, f"conversation:{conversation}"),
                ).fetchone()
                or [None]
            )[0],
            timeout=60,
        )

    built = bagula(url, "transform", *MODELS_ONLY, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    # Detection's output for the marked sessions, as detection and grouping write it.
    with psycopg.connect(url, autocommit=True) as conn:
        for s in (one, *of_user, *in_range, *kept):
            sid, started = s["sessionId"], s["startTime"] / 1000
            anomaly = conn.execute(
                "insert into anomalies (project_id, session_id, agent_name, anomaly_type, severity, details,"
                " session_started_at, explanation) values (%s, %s, %s, 'cost_spike', 'critical', %s,"
                " to_timestamp(%s), %s) returning anomaly_id",
                (
                    tenant.project_id,
                    sid,
                    s["agentName"],
                    json.dumps({"request": s["initialRequest"]}),
                    started,
                    f"cost spike in {s['initialRequest']}",
                ),
            ).fetchone()[0]
            conn.execute(
                "insert into alerts (project_id, source, source_id, agent_name, session_id, severity, payload)"
                " values (%s, 'anomaly', %s, %s, %s, 'critical', %s)",
                (tenant.project_id, anomaly, s["agentName"], sid, json.dumps({"text": s["initialRequest"]})),
            )
        incident = uuid.uuid4()
        examples = [s["sessionId"] for s in (one, *of_user, kept[2])]
        conn.execute(
            "insert into incidents (incident_id, project_id, agent_name, kind, status, first_seen, last_seen,"
            " peak_severity, current_severity, affected_sessions, span_sessions, verdict_count, summary,"
            " example_session_ids) values (%s, %s, 'customer-support-agent', 'cost_spike', 'open', now(), now(),"
            " 'critical', 'critical', 5, 5, 5, 'cost spikes', %s)",
            (incident, tenant.project_id, examples),
        )
        conn.execute(
            "insert into incident_events (event_id, incident_id, project_id, agent_name, kind, event, severity, at,"
            " summary, affected_sessions, example_session_ids) values (%s, %s, %s, 'customer-support-agent',"
            " 'cost_spike', 'opened', 'critical', now(), 'opened', 5, %s)",
            (uuid.uuid4(), incident, tenant.project_id, examples),
        )
        for sid in examples:
            conn.execute(
                "insert into incident_members (incident_id, project_id, agent_name, session_id, verdict_type,"
                " session_started_at, severity) values (%s, %s, 'customer-support-agent', %s, 'cost_spike', now(),"
                " 'critical')",
                (incident, tenant.project_id, sid),
            )
    yield {
        "url": url,
        "api": api,
        "tenant": tenant,
        "markers": markers,
        "user": user,
        "one": one,
        "of_user": of_user,
        "in_range": in_range,
        "kept": kept,
        "otlp_id": otlp_id,
        "incident": incident,
    }
    tenant.client.close()
    api.stop()


def test_no_trace_of_erased_sessions_is_left_in_any_table(platform):
    url, tenant, markers = platform["url"], platform["tenant"], platform["markers"]
    # The scan sees what it looks for: every marker is in the raw tables, the marts and the verdicts.
    before = {name: scan(url, marker) for name, marker in markers.items()}
    for name in ("one", "user", "range"):
        for table in (
            "public.agent_sessions",
            "public.session_turns",
            "public.llm_calls",
            "public.tool_calls",
            "public.anomalies",
            "public.alerts",
            "marts.session_search",
            "marts.fct_session_details",
            "marts.fct_turn_details",
            "marts.fct_call_details",
            "staging.stg_bagula__agent_sessions",
        ):
            assert table in before[name], (name, table, before[name])
    assert {"public.otlp_spans", "marts.fct_sessions"} <= set(before["user"])  # the userId is in fct_sessions

    one = tenant.client.delete(f"/v1/sessions/{platform['one']['sessionId']}")
    assert one.status_code == 200, one.text
    assert one.json()["sessions"] == 1
    by_user = tenant.client.post("/v1/erasures", json={"userId": platform["user"]})
    assert by_user.status_code == 200, by_user.text
    # Three SDK sessions and the one assembled from spans.
    assert by_user.json()["sessions"] == 4
    assert by_user.json()["rowsDeleted"]["otlp_spans"] == 3
    start = min(s["startTime"] for s in platform["in_range"])
    end = max(s["startTime"] for s in platform["in_range"]) + 1
    from datetime import datetime, timezone

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()

    by_range = bagula(
        url,
        "erase",
        "range",
        "--project",
        tenant.name,
        "--agent",
        "range-agent",
        "--since",
        iso(start),
        "--until",
        iso(end),
    )
    assert by_range.returncode == 0, by_range.stderr
    assert "3 session(s) erased" in by_range.stdout

    for name in ("one", "user", "range"):
        assert scan(url, markers[name]) == {}, name
    # The rest of the project is untouched, row for row.
    assert scan(url, markers["keep"]) == before["keep"]
    with psycopg.connect(url) as conn:
        examples = conn.execute(
            "select example_session_ids::text[] from incidents where incident_id = %s", (platform["incident"],)
        ).fetchone()[0]
        assert examples == [platform["kept"][2]["sessionId"]]
        link = conn.execute(
            "select count(*) from marts.fct_session_links where project_id = %s", (tenant.project_id,)
        ).fetchone()[0]
        assert link == 0  # both rows of the link named the erased parent
    assert tenant.client.get(f"/v1/sessions/{platform['kept'][0]['sessionId']}").status_code == 200
    # The agents' session counts follow: the erased sessions (and the agent only they had) are gone.
    agents = {a["agentName"]: a["sessionCount"] for a in tenant.client.get("/v1/agents").json()["agents"]}
    assert agents == {"customer-support-agent": 3, "range-agent": 1}
    assert tenant.client.get(f"/v1/sessions/{platform['one']['sessionId']}").status_code == 404


def test_erasing_again_changes_nothing_and_every_erasure_is_audited_without_content(platform):
    tenant = platform["tenant"]
    again = tenant.client.delete(f"/v1/sessions/{platform['one']['sessionId']}")
    assert again.status_code == 200 and again.json()["sessions"] == 0 and again.json()["rowsDeleted"] == {}
    assert tenant.client.post("/v1/erasures", json={"userId": platform["user"]}).json()["sessions"] == 0
    audit = tenant.client.get("/v1/erasures").json()["erasures"]
    assert [e["sessions"] for e in audit][:2] == [0, 0]
    assert {e["requestedBy"] for e in audit} == {f"key:{tenant.key_id}", f"cli:{__import__('getpass').getuser()}"}
    import hashlib

    by_user = [e for e in audit if "userIdSha256" in e["criteria"]]
    assert by_user and by_user[0]["criteria"]["userIdSha256"] == hashlib.sha256(platform["user"].encode()).hexdigest()
    assert platform["user"] not in json.dumps(audit)


def test_an_erased_session_sent_again_is_counted_as_a_duplicate_and_not_stored(platform):
    tenant, url = platform["tenant"], platform["url"]
    resent = tenant.client.post(INGEST, json={"sessions": [platform["one"], platform["of_user"][0]]})
    assert resent.status_code == 200, resent.text
    assert resent.json() == {"stored": 0, "duplicates": 2, "rejected": []}
    assert scan(url, platform["markers"]["one"]) == {}
    with psycopg.connect(url) as conn:
        tombstones = conn.execute(
            "select count(*) from session_ledger where project_id = %s and erased_at is not null", (tenant.project_id,)
        ).fetchone()[0]
    assert tombstones == 8


def test_erasure_requests_are_checked_and_the_api_and_pipeline_share_one_lock(platform):
    tenant = platform["tenant"]
    for body in (
        {},
        {"userId": "u", "agentName": "a"},
        {"agentName": "a", "since": 0},
        {"agentName": "a", "since": 10, "until": 5},
    ):
        answer = tenant.client.post("/v1/erasures", json=body)
        assert answer.status_code == 422, (body, answer.text)
    assert erasure.PIPELINE_LOCK == watermark.PIPELINE_LOCK
    # While a build holds the pipeline, an erasure waits for it (it cannot be written back after).
    with psycopg.connect(platform["url"], autocommit=True) as holder, watermark.pipeline_lock(holder):
        started = time.monotonic()
        with (
            httpx.Client(
                base_url=platform["api"].base_url, headers={"Authorization": f"Bearer {tenant.key}"}, timeout=2
            ) as client,
            pytest.raises(httpx.ReadTimeout),
        ):
            client.delete(f"/v1/sessions/{uuid.uuid4()}")
        assert time.monotonic() - started >= 2
