"""`bagula simulate`: deterministic, realistic traffic whose injected failures really show in the data."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from functools import lru_cache

import psycopg
import pytest

from simulator.faults import parse_injection, read_ground_truth
from simulator.run import generate

START = 1_761_955_200_000  # 2025-11-01T00:00:00Z
END = START + 4 * 86_400_000
MIDDLE = (START + END) / 2


@lru_cache(maxsize=None)
def scenario(*specs: str, agents: tuple[str, ...] = ("support", "research", "pipeline"), seed: int = 3):
    injections = [parse_injection(s, START, END) for s in specs]
    return generate(list(agents), START, END, seed=seed, scale=0.5, injections=injections)


def sessions_of(produced, agent: str) -> list[dict]:
    return [p.session for p in produced if p.session["agentName"] == agent]


def truth_of(produced, fault: str) -> set[str]:
    return {p.session["sessionId"] for p in produced for f in p.faults if f.fault == fault}


def before(sessions, at=MIDDLE):
    return [s for s in sessions if s["startTime"] < at]


def after(sessions, at=MIDDLE):
    return [s for s in sessions if s["startTime"] >= at]


def llm_calls(s):
    return [c for t in s["turns"] for c in t["llmCalls"]]


def tool_calls(s):
    return [c for t in s["turns"] for c in (t["agentResponse"] or {}).get("toolCalls", [])]


def cost(s):
    return sum(c["metrics"]["costUsd"] for c in llm_calls(s))


def test_the_same_seed_gives_the_same_sessions():
    first = [p.session for p in generate(["support", "pipeline"], START, START + 86_400_000, seed=11)]
    again = [p.session for p in generate(["support", "pipeline"], START, START + 86_400_000, seed=11)]
    other = [p.session for p in generate(["support", "pipeline"], START, START + 86_400_000, seed=12)]
    assert json.dumps(first) == json.dumps(again)
    assert {s["sessionId"] for s in first}.isdisjoint({s["sessionId"] for s in other})


def test_clean_traffic_has_several_agents_a_pipeline_and_no_faults():
    produced = scenario()
    assert all(not p.faults for p in produced)
    agents = {p.session["agentName"] for p in produced}
    assert agents == {"customer-support-agent", "research-agent", "pipeline-orchestrator",
                      "retriever-agent", "writer-agent", "reviewer-agent"}
    parents = {s["sessionId"] for s in sessions_of(produced, "pipeline-orchestrator")}
    children = [p.session for p in produced if p.session["parentSessionId"]]
    assert children and all(c["parentSessionId"] in parents for c in children)
    support = sessions_of(produced, "customer-support-agent")
    success = sum(s["finalOutcome"]["status"] == "success" for s in support) / len(support)
    assert 0.8 < success < 0.97
    tools = [c for s in support for c in tool_calls(s)]
    assert 0 < sum(c["error"] is not None for c in tools) / len(tools) < 0.08
    # Per-call cost agrees with the list price of the model used.
    call = llm_calls(support[0])[0]
    expected = (call["metrics"]["tokensInput"] * 2.5 + call["metrics"]["tokensOutput"] * 10) / 1e6
    assert call["model"] == "gpt-4o" and abs(call["metrics"]["costUsd"] - expected) < 1e-8


def test_cost_creep_rises_slowly_after_its_start():
    support = sessions_of(scenario("cost_creep@50%"), "customer-support-agent")
    quarter = (END - START) / 4
    means = [statistics.mean(cost(s) for s in support if START + q * quarter <= s["startTime"] < START + (q + 1) * quarter)
             for q in range(4)]
    assert means[1] < means[0] * 1.25  # flat before the start
    assert means[2] > means[1] * 1.1 and means[3] > means[2] * 1.1  # then a steady rise
    # Labelled faulty once the rise reaches 10 % (+30 % a day: 8 hours after the start).
    noticeable = MIDDLE + 86_400_000 / 3
    assert truth_of(scenario("cost_creep@50%"), "cost_creep") == {s["sessionId"] for s in after(support, noticeable)}


def test_cost_spike_multiplies_cost_inside_its_window():
    produced = scenario("cost_spike@50%..55%")
    support = sessions_of(produced, "customer-support-agent")
    end = START + 0.55 * (END - START)
    window = [s for s in support if MIDDLE <= s["startTime"] < end]
    assert statistics.median(cost(s) for s in window) > 3 * statistics.median(cost(s) for s in before(support))
    assert truth_of(produced, "cost_spike") == {s["sessionId"] for s in window}


def test_latency_spike_slows_calls_inside_its_window():
    produced = scenario("latency_spike@50%..55%")
    support = sessions_of(produced, "customer-support-agent")
    window = [s for s in support if s["sessionId"] in truth_of(produced, "latency_spike")]
    latency = lambda ss: statistics.median(c["metrics"]["latencyMs"] for s in ss for c in llm_calls(s))  # noqa: E731
    assert window and latency(window) > 3 * latency(before(support))


def overlapping(calls) -> bool:
    calls = sorted(calls, key=lambda c: c["startTime"])
    return any(b["startTime"] < a["endTime"] for a, b in zip(calls, calls[1:], strict=False))


def test_sequential_tax_serialises_calls_that_ran_in_parallel():
    research = sessions_of(scenario("sequential_tax@50%"), "research-agent")

    def parallel_share(sessions):
        fetches = [[c for c in (t["agentResponse"] or {})["toolCalls"] if c["toolName"] == "fetch_page"]
                   for s in sessions for t in s["turns"]]
        return sum(overlapping(f) for f in fetches) / len(fetches)

    assert parallel_share(before(research)) > 0.9
    assert parallel_share(after(research)) == 0


def test_tool_usage_change_stops_a_common_tool():
    support = sessions_of(scenario("tool_usage_change@50%"), "customer-support-agent")
    uses = lambda s: any(c["toolName"] == "get_customer" for c in tool_calls(s))  # noqa: E731
    assert sum(map(uses, before(support))) / len(before(support)) > 0.95
    assert not any(map(uses, after(support)))


def test_model_change_switches_the_model_and_shifts_behaviour():
    support = sessions_of(scenario("model_change@50%"), "customer-support-agent")
    assert {c["model"] for s in before(support) for c in llm_calls(s)} == {"gpt-4o"}
    assert {c["model"] for s in after(support) for c in llm_calls(s)} == {"gpt-4.1"}
    out = lambda ss: statistics.mean(c["metrics"]["tokensOutput"] for s in ss for c in llm_calls(s))  # noqa: E731
    assert out(after(support)) > 1.4 * out(before(support))


def test_confident_hallucination_pairs_high_confidence_with_unhappy_users():
    produced = scenario("confident_hallucination@50%")
    truth = truth_of(produced, "confident_hallucination")
    support = sessions_of(produced, "customer-support-agent")
    flagged = [s for s in support if s["sessionId"] in truth]
    assert len(flagged) > 0.2 * len(after(support))
    assert all(s["finalOutcome"]["confidence"] >= 0.9 and s["finalOutcome"]["userSatisfaction"] <= 2 for s in flagged)
    assert not any(s["finalOutcome"]["confidence"] >= 0.9 and s["finalOutcome"]["userSatisfaction"] <= 2
                   for s in before(support))


def test_context_rot_lengthens_sessions_and_degrades_the_long_ones():
    produced = scenario("context_rot@50%")
    research = sessions_of(produced, "research-agent")
    truth = truth_of(produced, "context_rot")
    rotten = [s for s in research if s["sessionId"] in truth]
    assert rotten and all(len(s["turns"]) >= 8 for s in rotten)
    assert max(len(s["turns"]) for s in before(research)) <= 6
    satisfaction = lambda ss: statistics.mean(s["finalOutcome"]["userSatisfaction"] for s in ss)  # noqa: E731
    assert satisfaction(rotten) < satisfaction(before(research)) - 0.5


def test_skill_bloat_adds_tools_and_their_failures():
    support = sessions_of(scenario("skill_bloat@50%"), "customer-support-agent")
    names = lambda ss: {c["toolName"] for s in ss for c in tool_calls(s)}  # noqa: E731
    errors = lambda ss: statistics.mean(c["error"] is not None for s in ss for c in tool_calls(s))  # noqa: E731
    assert len(names(after(support))) >= len(names(before(support))) + 10
    assert errors(after(support)) > 4 * errors(before(support))
    assert {s["metadata"]["toolsAvailable"] for s in after(support)} == {27}


def test_cascade_failure_fails_a_child_and_its_parents():
    produced = scenario("cascade_failure@50%")
    truth = truth_of(produced, "cascade_failure")
    by_id = {p.session["sessionId"]: p.session for p in produced}
    children = [by_id[i] for i in truth if by_id[i]["parentSessionId"]]
    assert children and all(c["agentName"] == "retriever-agent" for c in children)
    for child in children:
        parent = by_id[child["parentSessionId"]]
        assert child["finalOutcome"]["status"] != "success"
        assert parent["finalOutcome"]["status"] == "failure" and parent["sessionId"] in truth
    orchestrators = sessions_of(produced, "pipeline-orchestrator")
    failing = lambda ss: statistics.mean(s["finalOutcome"]["status"] != "success" for s in ss)  # noqa: E731
    assert failing(after(orchestrators)) > 5 * failing(before(orchestrators))


def test_a_bad_injection_is_a_clear_error():
    for spec, message in [("nope@50%", "unknown fault"), ("cost_spike", "missing @START"),
                          ("cost_spike@70%..60%", "end before start"), ("cost_spike@150%", "out of 0-100%")]:
        with pytest.raises(ValueError, match=message):
            parse_injection(spec, START, END)


def test_simulate_command_backfills_through_the_api_exactly_once(api, database_url, tenant, tmp_path):
    truth_path = tmp_path / "truth.jsonl"
    args = [sys.executable, "-m", "bagula", "simulate", "--start", "2025-11-01T00:00:00Z",
            "--end", "2025-11-02T00:00:00Z", "--seed", "5", "--scale", "0.5", "--no-progress",
            "--inject", "cascade_failure@30%", "--inject", "cost_spike@50%..60%",
            "--ground-truth", str(truth_path)]
    env = {**os.environ, "BAGULA_API_KEY": tenant.key, "BAGULA_ENDPOINT": api.base_url}
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr

    with psycopg.connect(database_url) as conn:
        stored = {r[0]: r[1] for r in conn.execute(
            "select session_id::text, agent_name from agent_sessions where project_id = %s", (tenant.project_id,))}
    expected = generate(["support", "research", "pipeline"], START, START + 86_400_000, seed=5, scale=0.5,
                        injections=[parse_injection(s, START, START + 86_400_000)
                                    for s in ("cascade_failure@30%", "cost_spike@50%..60%")])
    assert set(stored) == {p.session["sessionId"] for p in expected}
    assert f"sent {len(expected)} sessions" in first.stdout
    truth = read_ground_truth(truth_path)
    assert {t["faultType"] for t in truth} == {"cascade_failure", "cost_spike"}
    assert {t["sessionId"] for t in truth} <= set(stored)

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"({len(expected)} already stored" in again.stdout
