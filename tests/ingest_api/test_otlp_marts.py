"""Spans sent over OTLP reach the marts like SDK sessions, and every cost says where it came
from: the client's, the price table's (the project's negotiated rate first, then genai-prices)
or unknown (never a silent 0). Expected costs are computed here, from the rates set and from
genai-prices' own ``calc_price``."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import psycopg
import pytest
from genai_prices import Usage, calc_price
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ingest_api import db, pricing
from orchestration.dbt import transform
from simulator.samples import make_session
from tests.support.cli import bagula
from tests.support.services import ApiServer, new_tenant, wait_for


@pytest.fixture(scope="module")
def warehouse(pg):
    """A database of its own: these tests build the marts, which span every project."""
    url = pg.create_database(f"otlp_marts_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    api = ApiServer(url, BAGULA_OTLP_SESSION_QUIET_S="0.3", BAGULA_OTLP_ASSEMBLE_INTERVAL_S="0.1").start()
    yield url, api
    api.stop()


def rows(url: str, sql: str, params=()) -> list[dict]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(sql, params)
        names = [c.name for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def reference(model: str, tokens_in: int, tokens_out: int) -> Decimal:
    return calc_price(
        Usage(input_tokens=tokens_in, output_tokens=tokens_out),
        model_ref=model,
        provider_id="openai",
        genai_request_timestamp=datetime.now(timezone.utc),
    ).total_price


def chat(tracer, model: str, tokens_in: int, tokens_out: int, **extra) -> None:
    with tracer.start_as_current_span(
        f"chat {model}",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": tokens_in,
            "gen_ai.usage.output_tokens": tokens_out,
            **extra,
        },
    ):
        pass


def test_otlp_sessions_in_the_marts_with_the_source_of_every_cost(warehouse):
    url, api = warehouse
    tenant = new_tenant(api, url)
    # A negotiated rate for a family of models, with a cheaper cache read.
    done = bagula(
        url,
        "prices",
        "set",
        "--project",
        tenant.name,
        "--provider",
        "openai",
        "--model",
        "gpt-4.1*",
        "--input",
        "1",
        "--output",
        "2",
        "--cache-read",
        "0.5",
        "--note",
        "contract 2026",
    )
    assert done.returncode == 0, done.stderr
    shown = bagula(url, "prices", "show", "--project", tenant.name)
    assert "openai\tgpt-4.1*\talways\t1\t2\t0.5\t-\tcontract 2026" in shown.stdout

    provider = TracerProvider(resource=Resource.create({"service.name": "billing-agent"}))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=api.base_url + "/v1/traces", headers={"Authorization": f"Bearer {tenant.key}"})
        )
    )
    tracer = provider.get_tracer("agent")
    with tracer.start_as_current_span(
        "invoke_agent",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "billing-agent",
            "gen_ai.conversation.id": "c-1",
        },
    ):
        chat(tracer, "gpt-4o-mini", 1000, 200)  # genai-prices
        chat(tracer, "acme-llm-7", 500, 50)  # in no price table
        chat(tracer, "gpt-4o", 300, 30, **{"gen_ai.usage.cost": 0.0123})  # the instrumentation's own cost
        chat(tracer, "gpt-4.1-mini", 1000, 100, **{"gen_ai.usage.cache_read.input_tokens": 400})  # the rate set
    assert provider.force_flush()
    provider.shutdown()

    # And an SDK session, one call with its cost, one without (free until now).
    sdk_session = make_session(random.Random(5))
    sdk_session["agentName"] = "billing-agent"
    sdk_calls = [c for t in sdk_session["turns"] for c in t["llmCalls"]][:2]
    assert len(sdk_calls) == 2
    sdk_calls[0]["metrics"]["costUsd"] = 0.5
    sdk_calls[1].update(provider="openai", model="gpt-4o-mini")
    sdk_calls[1]["metrics"].update(costUsd=None, tokensInput=2000, tokensOutput=100)
    for call in [c for t in sdk_session["turns"] for c in t["llmCalls"]][2:]:
        call["metrics"]["costUsd"] = 0.01
    assert tenant.client.post("/v1/sessions/ingest", json={"sessions": [sdk_session]}).status_code == 200

    listed = wait_for(
        lambda: len(s := tenant.client.get("/v1/agents/billing-agent/sessions").json()["sessions"]) == 2 and s
    )
    otlp_id = next(s["sessionId"] for s in listed if s["sessionId"] != sdk_session["sessionId"])
    assert transform(url), "dbt build failed"

    scope = (tenant.project_id,)
    calls = {
        r["model"]: r
        for r in rows(
            url, "select * from marts.fct_llm_calls where project_id = %s and session_id = %s", (*scope, otlp_id)
        )
    }
    assert {m: (c["cost_source"], c["price_source"]) for m, c in calls.items()} == {
        "gpt-4o-mini": ("price_table", pricing.VERSION),
        "acme-llm-7": ("unknown", None),
        "gpt-4o": ("client", None),
        "gpt-4.1-mini": ("price_table", "project_prices"),
    }
    assert calls["gpt-4o-mini"]["cost_usd"] == pytest.approx(reference("gpt-4o-mini", 1000, 200))
    assert calls["acme-llm-7"]["cost_usd"] is None and calls["acme-llm-7"]["estimated_cost_usd"] is None
    assert (calls["gpt-4o"]["cost_usd"], calls["gpt-4o"]["client_cost_usd"]) == (Decimal("0.0123"),) * 2
    # (600 uncached x 1 + 400 cached x 0.5 + 100 output x 2) / 1e6
    assert calls["gpt-4.1-mini"]["cost_usd"] == Decimal("0.001")
    assert calls["gpt-4.1-mini"]["tokens_cache_read"] == 400

    sessions = {
        str(r["session_id"]): r for r in rows(url, "select * from marts.fct_sessions where project_id = %s", scope)
    }
    otlp, sdk = sessions[otlp_id], sessions[sdk_session["sessionId"]]
    estimated = calls["gpt-4o-mini"]["cost_usd"] + Decimal("0.001")
    assert (otlp["cost_source"], otlp["unknown_cost_calls"]) == ("unknown", 1)
    assert otlp["estimated_cost_usd"] == pytest.approx(estimated)
    assert otlp["total_cost_usd"] == pytest.approx(estimated + Decimal("0.0123"))
    sdk_estimate = reference("gpt-4o-mini", 2000, 100)
    others = len([c for t in sdk_session["turns"] for c in t["llmCalls"]]) - 2
    assert (sdk["cost_source"], sdk["unknown_cost_calls"]) == ("price_table", 0)
    assert sdk["estimated_cost_usd"] == pytest.approx(sdk_estimate)
    assert sdk["total_cost_usd"] == pytest.approx(Decimal("0.5") + sdk_estimate + Decimal("0.01") * others)

    # (the SDK session started at another hour: summed over hours)
    hourly = rows(
        url,
        "select model, sum(cost_usd) as cost_usd, sum(estimated_cost_usd) as estimated_cost_usd,"
        " sum(unknown_cost_calls) as unknown_cost_calls, sum(unknown_cost_tokens) as unknown_cost_tokens"
        " from marts.agg_agent_cost_hourly where project_id = %s group by model",
        scope,
    )
    by_model = {r["model"]: r for r in hourly}
    assert (
        by_model["acme-llm-7"]["cost_usd"],
        by_model["acme-llm-7"]["unknown_cost_calls"],
        by_model["acme-llm-7"]["unknown_cost_tokens"],
    ) == (0, 1, 550)
    assert by_model["gpt-4o-mini"]["estimated_cost_usd"] == pytest.approx(
        calls["gpt-4o-mini"]["cost_usd"] + sdk_estimate
    )
    daily = rows(
        url,
        "select sum(cost_usd) as cost, sum(estimated_cost_usd) as estimated,"
        " sum(unknown_cost_calls) as unknown from marts.agg_agent_cost_daily where project_id = %s",
        scope,
    )
    assert daily[0]["cost"] == pytest.approx(otlp["total_cost_usd"] + sdk["total_cost_usd"])
    assert daily[0]["estimated"] == pytest.approx(estimated + sdk_estimate)
    assert daily[0]["unknown"] == 1

    # Detection judges the OTLP session like any other: it is in its frame.
    assert {
        str(r["session_id"])
        for r in rows(url, "select session_id from marts.detection_sessions where project_id = %s", scope)
    } == set(sessions)
