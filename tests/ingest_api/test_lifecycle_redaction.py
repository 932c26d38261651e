"""Server-side redaction: a project's chosen ready redactors are applied by the API to every
session and every span before storage, so the values never reach the database; a project
without the setting stores what it is sent. The project's data policy through the API."""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from simulator.samples import make_batch
from tests.support.cli import bagula
from tests.support.services import INGEST, ApiServer, new_tenant, wait_for

# One of each kind the ready redactors know, and what each becomes.
SECRETS = {
    "jane.doe@example.com": "[REDACTED:email]",
    "+44 20 7946 0958": "[REDACTED:phone]",
    "4111 1111 1111 1111": "[REDACTED:card]",
    "sk-proj-Abc123Def456Ghi789Jkl012": "[REDACTED:api_key]",
}
TEXT = "contact " + ", ".join(SECRETS)


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[ApiServer]:
    # No key cache: a changed policy applies to the very next request.
    s = ApiServer(
        database_url,
        BAGULA_API_WORKERS="1",
        BAGULA_AUTH_CACHE_S="0",
        BAGULA_OTLP_SESSION_QUIET_S="0.5",
        BAGULA_OTLP_ASSEMBLE_INTERVAL_S="0.1",
        BAGULA_OTLP_SESSION_MAX_WAIT_S="5",
    ).start()
    yield s
    s.stop()


def session_with_secrets(seed: int) -> dict:
    s = copy.deepcopy(make_batch(random.Random(seed), 1)[0])
    s["initialRequest"] = TEXT
    s["metadata"]["note"] = TEXT
    s["finalOutcome"]["result"] = TEXT
    turn = s["turns"][0]
    turn["trigger"]["content"] = TEXT
    turn["userFeedback"] = {"comment": TEXT}
    turn["llmCalls"][0]["messages"][1]["content"] = TEXT
    turn["llmCalls"][0]["response"]["content"] = TEXT
    turn["agentResponse"]["message"] = TEXT
    tool = turn["agentResponse"]["toolCalls"][0]
    tool["arguments"] = {"note": TEXT}
    tool["result"] = {"rows": [TEXT]}
    tool["error"] = TEXT
    return s


def stored_text(url: str, project_id) -> str:
    """Everything the project's rows hold, in the raw tables and the spans, as one text."""
    with psycopg.connect(url) as conn:
        return "\n".join(
            conn.execute(
                f"select coalesce(string_agg(t::text, '\n'), '') from {table} t where project_id = %s", (project_id,)
            ).fetchone()[0]
            for table in ("agent_sessions", "session_turns", "llm_calls", "tool_calls", "otlp_spans")
        )


def send_spans(server: ApiServer, key: str) -> str:
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-agent"}))
    provider.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=server.base_url + "/v1/traces", headers={"Authorization": f"Bearer {key}"})
        )
    )
    tracer = provider.get_tracer("test")
    conversation = f"conv-{uuid.uuid4().hex[:8]}"
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.conversation.id": conversation,
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": TEXT}]}]),
                "input.value": TEXT,
            }
        )
        span.add_event("gen_ai.user.message", {"content": TEXT})
        span.set_status(Status(StatusCode.ERROR, TEXT))
    provider.shutdown()
    return conversation


def test_a_projects_redaction_setting_keeps_the_values_out_of_the_database(server, database_url):
    redacting, plain = new_tenant(server, database_url), new_tenant(server, database_url)
    changed = redacting.client.put(
        "/v1/data-policy", json={"redactors": ["emails", "phone_numbers", "card_numbers", "api_keys"]}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["redactors"] == ["emails", "phone_numbers", "card_numbers", "api_keys"]

    for seed, tenant in enumerate((redacting, plain)):
        assert tenant.client.post(INGEST, json={"sessions": [session_with_secrets(seed)]}).status_code == 200
        conversation = send_spans(server, tenant.key)
        with psycopg.connect(database_url, autocommit=True) as conn:
            key = (tenant.project_id, f"conversation:{conversation}")
            wait_for(
                lambda key=key: conn.execute(
                    "select 1 from otlp_sessions where project_id = %s and session_key = %s and outcome = 'stored'",
                    key,
                ).fetchone(),
                timeout=60,
            )

    redacted, sent = stored_text(database_url, redacting.project_id), stored_text(database_url, plain.project_id)
    for secret, token in SECRETS.items():
        # A project without the setting stores what it is sent: the check can see the values.
        assert secret in sent and token not in sent
        assert secret not in redacted, secret
        # In the session's fields, the spans' attributes, events and status, and the session made of them.
        assert redacted.count(token) >= 12, (token, redacted.count(token))
    # Identifiers and figures stay as sent.
    with psycopg.connect(database_url) as conn:
        model, tokens = conn.execute(
            "select model, tokens_input from llm_calls where project_id = %s"
            " and provider = 'openai' and tokens_input = 10",
            (redacting.project_id,),
        ).fetchone()
    assert (model, tokens) == ("gpt-4o", 10)


def test_the_data_policy_answers_with_defaults_and_refuses_unknown_values(server, database_url):
    tenant = new_tenant(server, database_url)
    policy = tenant.client.get("/v1/data-policy").json()
    assert policy == {
        "project": tenant.name,
        "rawDays": 90,
        "martsDays": 395,
        "verdictsDays": 395,
        "defaults": ["marts", "raw", "verdicts"],
        "redactors": [],
    }
    changed = tenant.client.put("/v1/data-policy", json={"rawDays": 30, "redactors": ["emails"]}).json()
    assert (changed["rawDays"], changed["defaults"], changed["redactors"]) == (30, ["marts", "verdicts"], ["emails"])
    # Fields left out keep their value; null goes back to the default.
    assert tenant.client.put("/v1/data-policy", json={"rawDays": None}).json()["redactors"] == ["emails"]
    assert tenant.client.get("/v1/data-policy").json()["rawDays"] == 90
    for body in ({}, {"rawDays": 0}, {"rawDays": 10**12}, {"redactors": ["names"]}, {"martsDays": "long"}):
        assert tenant.client.put("/v1/data-policy", json=body).status_code == 422, body
    shown = bagula(database_url, "redaction", "show", "--project", tenant.name)
    assert shown.stdout.strip() == f"{tenant.name}: emails"
    assert bagula(database_url, "redaction", "set", "--project", tenant.name, "none").returncode == 0
    assert tenant.client.get("/v1/data-policy").json()["redactors"] == []
