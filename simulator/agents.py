"""Simulated agents: realistic sessions, recorded through the SDK's tracker.

Each agent turns (random source, start time, active faults) into finished
sessions in the wire format, and says which faults actually shaped each one.
Everything is drawn from the given ``random.Random``: the same seed gives the
same sessions, ids included.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from bagula_client import SessionTracker
from simulator.faults import Injection

# USD per million tokens (input, output).
PRICES = {
    ("openai", "gpt-4o"): (2.50, 10.00),
    ("openai", "gpt-4o-mini"): (0.15, 0.60),
    ("openai", "gpt-4.1"): (2.00, 8.00),
    ("anthropic", "claude-sonnet-4"): (3.00, 15.00),
    ("anthropic", "claude-sonnet-4.5"): (3.00, 15.00),
    ("anthropic", "claude-haiku-3.5"): (0.80, 4.00),
}
# What a provider update swaps each model for.
MODEL_UPDATES = {
    ("openai", "gpt-4o"): ("openai", "gpt-4.1"),
    ("anthropic", "claude-sonnet-4"): ("anthropic", "claude-sonnet-4.5"),
    ("openai", "gpt-4o-mini"): ("openai", "gpt-4.1"),
}
BLOAT_TOOLS = [
    "crm_lookup_v2", "order_api_legacy", "ticket_search", "kb_semantic_search", "billing_portal",
    "shipping_tracker", "inventory_check", "loyalty_points", "translate_text", "sentiment_probe",
    "escalate_to_human", "calendar_booking", "address_validate", "fraud_score", "coupon_engine",
    "warranty_lookup", "returns_portal", "survey_send", "sms_notify", "voice_callback",
    "policy_search", "macro_library",
]
WORDS = (
    "order refund shipping delay invoice account password reset subscription plan upgrade billing "
    "address warehouse tracking carrier customer policy warranty return exchange discount payment "
    "card declined charge duplicate cancel renewal support ticket priority email confirmation"
).split()


class _Capture:
    """The tracker's sink: completed sessions are kept here instead of being sent."""

    def __init__(self) -> None:
        self.sessions: list[dict] = []

    def enqueue(self, session: dict) -> bool:
        self.sessions.append(session)
        return True


@dataclass
class Produced:
    session: dict
    faults: list[Injection] = field(default_factory=list)


class Run:
    """One simulated session being written: a clock, the tracker and the active faults."""

    def __init__(self, rng: random.Random, agent: str, start_ms: float, faults: list[Injection]) -> None:
        self.rng = rng
        self.agent = agent
        self.clock = start_ms
        self.start_ms = start_ms
        self.faults = {f.fault: f for f in faults if f.active(agent, start_ms)}
        self.applied: set[str] = set()
        self.capture = _Capture()
        self.tracker = SessionTracker(self.capture)  # type: ignore[arg-type]

    def fault(self, name: str) -> Injection | None:
        return self.faults.get(name)

    def applies(self, name: str) -> bool:
        """Whether the fault is active; marks it as shaping this session."""
        if name in self.faults:
            self.applied.add(name)
            return True
        return False

    def text(self, words: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(words))

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def lognormal(self, median: float, sigma: float = 0.35) -> float:
        return median * math.exp(self.rng.gauss(0, sigma))

    # -- cost and latency modifiers shared by all agents

    def token_factor(self) -> float:
        factor = 1.0
        creep = self.fault("cost_creep")
        if creep is not None:
            rise = 0.30 * creep.days_active(self.start_ms)  # +30% a day: a slow rise
            if rise >= 0.10:  # before that the fault has not yet shaped the session noticeably
                self.applied.add("cost_creep")
            factor *= 1 + rise
        if self.applies("cost_spike"):
            factor *= 6.0
        return factor

    def latency_factor(self) -> float:
        return 4.0 if self.applies("latency_spike") else 1.0

    def model(self, provider: str, model: str) -> tuple[str, str]:
        if (provider, model) in MODEL_UPDATES and self.applies("model_change"):
            return MODEL_UPDATES[(provider, model)]
        return provider, model

    def llm_call(self, session_id: str, turn_id: str, provider: str, model: str,
                 tokens_in: int, tokens_out: int, prompt: str) -> None:
        provider, model = self.model(provider, model)
        if "model_change" in self.applied:
            tokens_out = int(tokens_out * 1.7)  # the new model is wordier
        factor = self.token_factor()
        tokens_in = int(tokens_in * factor)
        price_in, price_out = PRICES[(provider, model)]
        latency = self.lognormal(350 + 12 * tokens_out + 0.02 * tokens_in) * self.latency_factor()
        start = self.clock
        self.clock += latency
        self.tracker.record_llm_call(
            session_id, turn_id, provider=provider, model=model, start_time=start, end_time=self.clock,
            messages=[{"role": "system", "content": f"You are the {self.agent}."},
                      {"role": "user", "content": prompt}],
            response={"role": "assistant", "content": self.text(min(40, 5 + tokens_out // 20))},
            tokens_input=tokens_in, tokens_output=tokens_out,
            cost_usd=round((tokens_in * price_in + tokens_out * price_out) / 1e6, 8),
            latency_ms=round(latency, 1),
        )

    def tools(self, calls: list[tuple[str, float, float]], parallel: bool) -> list[dict]:
        """Tool calls as (name, median latency ms, error rate); parallel ones overlap in time."""
        if parallel and len(calls) > 1 and self.applies("sequential_tax"):
            parallel = False
        made = []
        start = self.clock
        longest = 0.0
        for name, median, error_rate in calls:
            latency = self.lognormal(median) * self.latency_factor()
            begin = start if parallel else self.clock
            failed = self.rng.random() < error_rate
            made.append({
                "tool_id": f"call_{self.rng.getrandbits(48):012x}", "tool_name": name,
                "arguments": {"query": self.text(4)}, "start_time": begin, "end_time": begin + latency,
                "result": None if failed else {"items": [self.text(5)]},
                "error": self.rng.choice(["timeout", "upstream 502", "invalid arguments"]) if failed else None,
                "latency_ms": round(latency, 1),
            })
            if parallel:
                longest = max(longest, latency)
            else:
                self.clock += latency
        if parallel:
            self.clock = start + longest
        return made

    def outcome(self, ok_rate: float) -> tuple[str, int, float]:
        """(status, satisfaction 1-5, confidence 0-1) for a normally behaving agent."""
        if self.rng.random() < ok_rate:
            return "success", self.rng.choice([4, 4, 5, 5, 5, 3]), round(self.rng.uniform(0.7, 0.95), 3)
        status = "failure" if self.rng.random() < 0.75 else "error"
        return status, self.rng.choice([1, 1, 2, 2, 3]), round(self.rng.uniform(0.2, 0.6), 3)

    def finish(self, session_id: str, status: str, satisfaction: int, confidence: float) -> Produced:
        if status == "success" and self.fault("confident_hallucination") and self.rng.random() < 0.35:
            self.applied.add("confident_hallucination")
            satisfaction, confidence = self.rng.choice([1, 1, 2]), round(self.rng.uniform(0.92, 0.99), 3)
        self.clock += self.lognormal(300)
        self.tracker.complete_session(session_id, status, result=self.text(8), user_satisfaction=satisfaction,
                                      confidence=confidence, end_time=self.clock)
        [session] = self.capture.sessions
        return Produced(session, [self.faults[name] for name in sorted(self.applied)])

    def start(self, request: str, user: str, metadata: dict[str, Any], parent: str | None = None) -> str:
        return self.tracker.start_session(self.agent, request, user_id=user, metadata=metadata,
                                          parent_session_id=parent, session_id=self.new_id(),
                                          start_time=self.start_ms, tags=["simulated"])


# ---------------------------------------------------------------- the agents


def customer_support(rng: random.Random, start_ms: float, faults: list[Injection]) -> list[Produced]:
    run = Run(rng, "customer-support-agent", start_ms, faults)
    bloated = run.applies("skill_bloat")
    metadata = {"channel": rng.choice(["web", "email", "chat"]), "toolsAvailable": 27 if bloated else 5}
    sid = run.start(run.text(14), f"customer-{rng.randint(1, 2000)}", metadata)
    turns = 1 + min(5, int(rng.expovariate(0.8)))
    if run.fault("model_change") and rng.random() < 0.5:
        turns += 1
    tool_errors = 0
    error_rate = 0.30 if bloated else 0.03
    for n in range(1, turns + 1):
        turn = run.tracker.start_turn(sid, {"type": "user_message", "content": run.text(12)}, timestamp=run.clock)
        run.clock += run.lognormal(40)
        run.llm_call(sid, turn, "openai", "gpt-4o", 900 + 350 * n + rng.randint(0, 400),
                     rng.randint(60, 260), run.text(20))
        if n == 1:
            lookups = [("get_customer", 70, error_rate), ("search_orders", 140, error_rate)]
            if run.applies("tool_usage_change"):
                lookups = [("search_orders", 140, error_rate)]  # stops looking the customer up
            elif "model_change" in run.applied:
                lookups.reverse()  # the updated model orders its calls differently
            calls = run.tools(lookups, parallel=True)
        else:
            options = [("lookup_faq", 220, error_rate), ("issue_refund", 420, error_rate),
                       ("send_email", 260, error_rate)]
            calls = run.tools([c for c in options if rng.random() < 0.35], parallel=False)
        if bloated:
            calls += run.tools([(rng.choice(BLOAT_TOOLS), 180, 0.45) for _ in range(rng.randint(1, 3))],
                               parallel=False)
        tool_errors += sum(1 for c in calls if c["error"])
        run.tracker.record_agent_response(sid, turn, message=run.text(16), tool_calls=calls)
        run.clock += run.lognormal(8000, 0.6)  # the customer reads and answers
    ok_rate = 0.93 - 0.12 * ("model_change" in run.applied) - 0.08 * tool_errors
    return [run.finish(sid, *run.outcome(max(0.2, ok_rate)))]


def research(rng: random.Random, start_ms: float, faults: list[Injection]) -> list[Produced]:
    run = Run(rng, "research-agent", start_ms, faults)
    sid = run.start("Research: " + run.text(10), f"analyst-{rng.randint(1, 60)}", {"depth": rng.choice(["quick", "deep"])})
    rot = run.fault("context_rot")
    turns = rng.randint(3, 6) if rot is None else rng.randint(5, 14)
    satisfaction_drop = 0.0
    for n in range(1, turns + 1):
        turn = run.tracker.start_turn(sid, {"type": "agent_step", "content": run.text(8)}, timestamp=run.clock)
        context = 2500 + 2800 * n  # the conversation accumulates
        run.llm_call(sid, turn, "anthropic", "claude-sonnet-4", context + rng.randint(0, 1500),
                     rng.randint(200, 700), run.text(25))
        calls = run.tools([("web_search", 650, 0.04)], parallel=False)
        calls += run.tools([("fetch_page", 900, 0.06) for _ in range(rng.randint(2, 4))], parallel=True)
        run.tracker.record_agent_response(sid, turn, message=run.text(20), tool_calls=calls)
        if rot is not None and n > 6:
            satisfaction_drop += 0.5  # long contexts: instructions forgotten, quality falls
    status, satisfaction, confidence = run.outcome(0.9)
    if rot is not None and turns >= 8:
        run.applied.add("context_rot")
        satisfaction = max(1, min(satisfaction, 5 - int(satisfaction_drop)))
        if rng.random() < 0.5:
            status = "failure"
    return [run.finish(sid, status, satisfaction, confidence)]


def _child(rng: random.Random, agent: str, start_ms: float, parent: str, faults: list[Injection],
           provider: str, model: str, tools: list[tuple[str, float, float]]) -> Produced:
    run = Run(rng, agent, start_ms, faults)
    sid = run.start(run.text(10), "pipeline", {"stage": agent}, parent=parent)
    turn = run.tracker.start_turn(sid, {"type": "delegation", "from": parent}, timestamp=run.clock)
    run.llm_call(sid, turn, provider, model, rng.randint(1500, 5000), rng.randint(150, 600), run.text(15))
    calls = run.tools(tools, parallel=False)
    run.tracker.record_agent_response(sid, turn, message=run.text(12), tool_calls=calls)
    failed_tools = sum(1 for c in calls if c["error"])
    status, satisfaction, confidence = run.outcome(0.99 if not failed_tools else 0.3)
    return run.finish(sid, status, satisfaction, confidence)


def pipeline(rng: random.Random, start_ms: float, faults: list[Injection]) -> list[Produced]:
    """An orchestrator session that spawns retriever, writer and reviewer child sessions."""
    run = Run(rng, "pipeline-orchestrator", start_ms, faults)
    sid = run.start("Write a report on " + run.text(6), f"team-{rng.randint(1, 12)}", {"pipeline": "report"})
    turn = run.tracker.start_turn(sid, {"type": "job", "content": run.text(8)}, timestamp=run.clock)
    run.llm_call(sid, turn, "openai", "gpt-4o-mini", rng.randint(800, 1600), rng.randint(100, 300), run.text(10))
    cascade = run.fault("cascade_failure")
    retriever_error = 0.7 if cascade else 0.02
    stages = [
        ("retriever-agent", "openai", "gpt-4o-mini", [("vector_search", 180, retriever_error), ("rerank", 90, 0.01)]),
        ("writer-agent", "anthropic", "claude-sonnet-4", [("draft_section", 400, 0.02)]),
        ("reviewer-agent", "anthropic", "claude-haiku-3.5", [("style_check", 120, 0.01)]),
    ]
    children: list[Produced] = []
    for agent, provider, model, tools in stages:
        child = _child(rng, agent, run.clock + run.lognormal(50), sid, faults, provider, model, tools)
        children.append(child)
        run.clock = child.session["endTime"]
        if child.session["finalOutcome"]["status"] != "success":
            break  # the pipeline cannot go on without this stage
    failed_child = next((c for c in children if c.session["finalOutcome"]["status"] != "success"), None)
    run.tracker.record_agent_response(sid, turn, message=run.text(10), tool_calls=[])
    if failed_child is not None:
        if cascade is not None and failed_child.session["agentName"] == "retriever-agent":
            # The injected fault is the retriever's; other stages still fail on their own.
            run.applied.add("cascade_failure")
            failed_child.faults.append(cascade)
        produced = run.finish(sid, "failure", rng.choice([1, 2]), round(rng.uniform(0.2, 0.5), 3))
    else:
        produced = run.finish(sid, *run.outcome(0.98))
    return [produced, *children]


@dataclass(frozen=True)
class AgentProfile:
    name: str
    sessions_per_hour: float
    generate: Callable[[random.Random, float, list[Injection]], list[Produced]]


AGENTS = {
    "support": AgentProfile("customer-support-agent", 30.0, customer_support),
    "research": AgentProfile("research-agent", 8.0, research),
    "pipeline": AgentProfile("pipeline-orchestrator", 5.0, pipeline),
}
