"""Helpers for the ml tests: the session frame from wire-format sessions, and simulated days.

``session_frame`` computes each column of ``ml.schema.SESSION_SCHEMA`` from the
SDK's wire format the way the marts do, so the detectors are tested on the same
figures they see in production.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import polars as pl

from ml.schema import SESSION_SCHEMA, conform
from simulator.faults import parse_injection
from simulator.run import generate

DAY_MS = 86_400_000
START = datetime(2025, 11, 1, tzinfo=timezone.utc)
START_MS = START.timestamp() * 1000
ALL_AGENTS = ("support", "research", "pipeline")


def _turn_key(turn: dict, index: int) -> tuple:
    return (turn.get("turnNumber", index), turn.get("timestamp") or 0.0, index)


def session_row(session: dict, project_id: str = "project") -> dict:
    """One wire-format session -> one row of the contract frame."""
    turns = [t for _, t in sorted(((_turn_key(t, i), t) for i, t in enumerate(session.get("turns") or [])),
                                  key=lambda pair: pair[0])]
    llm_calls = [c for t in turns for c in t.get("llmCalls") or []]
    tokens_in = tokens_out = tokens_total = peak = 0
    cost = llm_latency = 0.0
    models, providers = set(), set()
    for call in llm_calls:
        metrics = call.get("metrics") or {}
        t_in = metrics.get("tokensInput") or 0
        t_out = metrics.get("tokensOutput") or 0
        tokens_in += t_in
        tokens_out += t_out
        tokens_total += metrics.get("tokensTotal") if metrics.get("tokensTotal") is not None else t_in + t_out
        peak = max(peak, t_in)
        cost += metrics.get("costUsd") or 0.0
        latency = metrics.get("latencyMs")
        if latency is None and call.get("endTime") is not None:
            latency = call["endTime"] - call["startTime"]
        llm_latency += latency or 0.0
        models.add(call["model"])
        providers.add(call["provider"])
    sequence: list[str] = []
    tool_count = tool_errors = 0
    tool_latency = tool_wall = 0.0
    for turn in turns:
        calls = list((turn.get("agentResponse") or {}).get("toolCalls") or [])
        ordered = sorted(enumerate(calls), key=lambda pair: (pair[1]["startTime"], pair[0]))
        sequence += [c["toolName"] for _, c in ordered]
        tool_count += len(calls)
        tool_errors += sum(1 for c in calls if c.get("error") is not None)
        for call in calls:
            latency = call.get("latencyMs")
            if latency is None and call.get("endTime") is not None:
                latency = call["endTime"] - call["startTime"]
            tool_latency += latency or 0.0
        if calls:
            ends = [c.get("endTime") if c.get("endTime") is not None else c["startTime"] for c in calls]
            tool_wall += max(ends) - min(c["startTime"] for c in calls)
    outcome = session.get("finalOutcome") or {}
    end = session.get("endTime")
    return {
        "project_id": project_id,
        "session_id": str(session["sessionId"]),
        "parent_session_id": str(session["parentSessionId"]) if session.get("parentSessionId") else None,
        "agent_name": session["agentName"],
        "started_at": datetime.fromtimestamp(session["startTime"] / 1000, tz=timezone.utc),
        "duration_ms": None if end is None else end - session["startTime"],
        "turn_count": len(turns),
        "llm_call_count": len(llm_calls),
        "tool_call_count": tool_count,
        "tool_error_count": tool_errors,
        "tokens_input": tokens_in,
        "tokens_output": tokens_out,
        "tokens_total": tokens_total,
        "peak_tokens_input": peak,
        "total_cost_usd": cost,
        "llm_latency_ms": llm_latency,
        "tool_latency_ms": tool_latency,
        "tool_wall_ms": tool_wall,
        "models": ",".join(sorted(models)),
        "providers": ",".join(sorted(providers)),
        "tool_sequence": ",".join(sequence),
        "status": outcome.get("status", "unknown"),
        "user_satisfaction": None if outcome.get("userSatisfaction") is None else float(outcome["userSatisfaction"]),
        "confidence": None if outcome.get("confidence") is None else float(outcome["confidence"]),
    }


def session_frame(sessions: Iterable[dict], project_id: str = "project") -> pl.DataFrame:
    rows = [session_row(s, project_id) for s in sessions]
    return conform(pl.DataFrame(rows, schema=SESSION_SCHEMA, orient="row"))


def simulate(days: float, injections: Iterable[str] = (), *, seed: int = 7, scale: float = 1.0,
             agents: Iterable[str] = ALL_AGENTS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``days`` of traffic from START with the injections (``cost_spike@50%``...):
    (session frame, ground truth with session_id, agent_name, fault_type)."""
    end_ms = START_MS + days * DAY_MS
    parsed = [parse_injection(spec, START_MS, end_ms) for spec in injections]
    produced = generate(list(agents), START_MS, end_ms, seed=seed, scale=scale, injections=parsed)
    frame = session_frame(p.session for p in produced)
    truth = pl.DataFrame(
        [{"session_id": str(p.session["sessionId"]), "agent_name": p.session["agentName"], "fault_type": f.fault}
         for p in produced for f in p.faults],
        schema={"session_id": pl.Utf8, "agent_name": pl.Utf8, "fault_type": pl.Utf8},
    ).unique(maintain_order=True)
    return frame, truth


def day_bounds(day: int) -> tuple[datetime, datetime]:
    start = START + timedelta(days=day)
    return start, start + timedelta(days=1)


# Mirrors the orchestration: a baseline is the first stable window of the agent's first
# 7 days, usable for a day once its window has closed; the frame holds HISTORY before the
# day and an hour after it for late children.
BASELINE_SEARCH = timedelta(days=7)
CHILD_SLACK = timedelta(hours=1)


def auto_baselines(frame: pl.DataFrame, day_start: datetime) -> dict[str, dict]:
    """agent -> summarize() of its first stable window, searched in the history up to the
    end of the day (as the orchestration does), usable when the window closed by day_start."""
    from ml import baseline

    until = day_start + timedelta(days=1)
    out = {}
    for agent in sorted(frame.get_column("agent_name").unique().to_list()):
        sessions = frame.filter(pl.col("agent_name") == agent)
        first = sessions.get_column("started_at").min()
        history = sessions.filter(pl.col("started_at") < min(until, first + BASELINE_SEARCH))
        window = baseline.find_stable_window(history)
        if window is None or window[1] > day_start:
            continue
        start, end = window
        out[agent] = baseline.summarize(history.filter((pl.col("started_at") >= start) & (pl.col("started_at") < end)))
    return out


def detect_days(frame: pl.DataFrame, days: Iterable[int], *, baselines: bool = True) -> pl.DataFrame:
    """anomaly.detect over whole days, as the orchestration calls it."""
    from ml import anomaly

    found = []
    for day in days:
        start, end = day_bounds(day)
        history = frame.filter((pl.col("started_at") >= start - anomaly.HISTORY)
                               & (pl.col("started_at") < end + CHILD_SLACK))
        found.append(anomaly.detect(history, day_start=start, day_end=end,
                                    baselines=auto_baselines(frame, start) if baselines else {}))
    return pl.concat(found, how="vertical")


def judged(frame: pl.DataFrame, days: Iterable[int]) -> pl.DataFrame:
    days = list(days)
    start, end = day_bounds(min(days))[0], day_bounds(max(days))[1]
    return frame.filter((pl.col("started_at") >= start) & (pl.col("started_at") < end))
