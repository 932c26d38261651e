"""Realistic sessions in the SDK's wire format, for tests, benchmarks and examples.

About five turns, five LLM calls and five tool calls per session, with messages
of a few hundred bytes (roughly 6-7 KB of JSON), deterministic for a given seed.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

MODELS = [("openai", "gpt-4o", 2.5e-6, 10e-6), ("anthropic", "claude-sonnet-4", 3e-6, 15e-6)]
TOOLS = ["search_orders", "get_customer", "issue_refund", "send_email", "lookup_faq"]
WORDS = (
    "the customer asked about order status refund shipping delay invoice account password "
    "reset subscription plan upgrade billing address warehouse tracking number carrier"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def make_session(
    rng: random.Random,
    *,
    agent_name: str = "customer-support-agent",
    start_ms: int = 1_764_000_000_000,
    turns: int = 5,
    tools_per_turn: int = 1,
) -> dict[str, Any]:
    session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    t = start_ms
    turn_list = []
    for n in range(1, turns + 1):
        provider, model, price_in, price_out = rng.choice(MODELS)
        tokens_in, tokens_out = rng.randint(300, 3000), rng.randint(50, 600)
        llm_latency = rng.randint(300, 4000)
        llm_call = {
            "callId": f"llm-{n}",
            "provider": provider,
            "model": model,
            "startTime": t,
            "endTime": t + llm_latency,
            "messages": [
                {"role": "system", "content": "You are a helpful support agent. " + _text(rng, 12)},
                {"role": "user", "content": _text(rng, 24)},
            ],
            "response": {"role": "assistant", "content": _text(rng, 20)},
            "metrics": {
                "tokensInput": tokens_in,
                "tokensOutput": tokens_out,
                "tokensTotal": tokens_in + tokens_out,
                "costUsd": round(tokens_in * price_in + tokens_out * price_out, 8),
                "latencyMs": llm_latency,
            },
        }
        t += llm_latency
        tool_calls = []
        for _ in range(tools_per_turn):
            tool_latency = rng.randint(20, 800)
            failed = rng.random() < 0.05
            tool_calls.append({
                "toolId": f"call_{rng.getrandbits(48):012x}",
                "toolName": rng.choice(TOOLS),
                "arguments": {"query": _text(rng, 6), "limit": rng.randint(1, 20)},
                "startTime": t,
                "endTime": t + tool_latency,
                "result": None if failed else {"items": [_text(rng, 6) for _ in range(2)]},
                "error": "upstream timeout" if failed else None,
                "latencyMs": tool_latency,
            })
            t += tool_latency
        turn_list.append({
            "turnId": f"turn-{n}",
            "turnNumber": n,
            "timestamp": t,
            "trigger": {"type": "user_message", "content": _text(rng, 10)},
            "llmCalls": [llm_call],
            "agentResponse": {"message": _text(rng, 12), "toolCalls": tool_calls},
            "userFeedback": None,
        })
        t += rng.randint(1000, 20000)
    return {
        "sessionId": session_id,
        "agentName": agent_name,
        "userId": f"user-{rng.randint(1, 500)}",
        "initialRequest": _text(rng, 20),
        "startTime": start_ms,
        "endTime": t,
        "metadata": {"channel": rng.choice(["web", "email", "chat"]), "region": "eu-west-1"},
        "tags": ["production"],
        "parentSessionId": None,
        "turns": turn_list,
        "finalOutcome": {
            "status": "success" if rng.random() < 0.9 else "failure",
            "result": _text(rng, 10),
            "userSatisfaction": rng.randint(1, 5),
            "confidence": round(rng.random(), 3),
        },
    }


def make_batch(rng: random.Random, size: int, **kwargs: Any) -> list[dict[str, Any]]:
    start = kwargs.pop("start_ms", 1_764_000_000_000)
    return [make_session(rng, start_ms=start + i * 1000, **kwargs) for i in range(size)]
