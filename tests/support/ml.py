"""Helpers for the ml tests: the session frame from wire-format sessions, and simulated days.

``session_frame`` computes each column of ``ml.schema.SESSION_SCHEMA`` from the
SDK's wire format the way the marts do, so the detectors are tested on the same
figures they see in production.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import polars as pl

from ml.schema import SESSION_SCHEMA, conform
from ml.verdicts import REGRESSION_SCHEMA, no_anomalies
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


def forest_days(frame: pl.DataFrame, days: Iterable[int]) -> pl.DataFrame:
    """Each agent's forest verdicts of whole days, trained on its 7 days before the day (when it
    has 50 sessions), as the orchestration scores them."""
    from ml import anomaly, forest

    found = [no_anomalies()]
    for day in days:
        start, end = day_bounds(day)
        history = frame.filter((pl.col("started_at") >= start - anomaly.HISTORY) & (pl.col("started_at") < end))
        for agent in sorted(history.get_column("agent_name").unique().to_list()):
            rows = history.filter(pl.col("agent_name") == agent)
            model = forest.train(rows.filter(pl.col("started_at") < start), agent_name=agent, day_start=start)
            if model is not None:
                found.append(forest.score(model, rows.filter(pl.col("started_at") >= start)).select(found[0].columns))
    return pl.concat(found, how="vertical")


def compare_days(frame: pl.DataFrame, days: Iterable[int]) -> pl.DataFrame:
    """Regressions of whole days against the baseline whose window closed before the day."""
    from ml import regression

    found = [pl.DataFrame(schema=REGRESSION_SCHEMA)]
    for day in days:
        start, end = day_bounds(day)
        today = frame.filter((pl.col("started_at") >= start) & (pl.col("started_at") < end))
        for agent, summary in sorted(auto_baselines(frame, start).items()):
            found.append(regression.compare(today.filter(pl.col("agent_name") == agent), summary))
    return pl.concat(found, how="vertical")


def judge_days(frame: pl.DataFrame, days: Iterable[int], *, forests: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(anomalies, regressions) of whole days as the orchestration finds them: the rules,
    failure modes and window shifts, each agent's forest, and regressions against the baseline."""
    days = list(days)
    anomalies = detect_days(frame, days)
    if forests:
        anomalies = pl.concat([anomalies, forest_days(frame, days)], how="vertical")
    return anomalies, compare_days(frame, days)


# The simulated scenarios the ml tests share (computed once per test run): DAYS of traffic,
# day 0 the history baselines come from, one fault injected (or none).
DAYS = 4
JUDGED = range(1, DAYS)


@lru_cache(maxsize=None)
def scenario_frames(*specs: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(session frame, ground truth) of the scenario."""
    return simulate(DAYS, specs, seed=7)


@lru_cache(maxsize=None)
def scenario_anomalies(*specs: str) -> pl.DataFrame:
    """Its rules', failure modes' and window shifts' verdicts for the judged days."""
    return detect_days(scenario_frames(*specs)[0], JUDGED)


@lru_cache(maxsize=None)
def scenario_regressions(*specs: str) -> pl.DataFrame:
    return compare_days(scenario_frames(*specs)[0], JUDGED)


@lru_cache(maxsize=None)
def scenario_forests(*specs: str) -> pl.DataFrame:
    return forest_days(scenario_frames(*specs)[0], JUDGED)


# ------------------------------------------------------------------ real-world series as sessions

# One session every 10 minutes (the research agent's pace): a day of a series is 144
# sessions, enough for a baseline window, the creep's 6 h level and 24 h trend.
SERIES_CADENCE = timedelta(minutes=10)
SERIES_AGENT = "series-agent"


def series_frame(values, *, cadence: timedelta = SERIES_CADENCE, project_id: str = "project") -> pl.DataFrame:
    """A metric series streamed in as sessions: value i is the cost of session i (one LLM call,
    started at START + i * cadence); everything else about the sessions is the same, so only
    the cost-related detectors can see anything. Costs are the values scaled to a median of
    1 cent (the detectors judge ratios, so the scale changes nothing)."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    scale = 0.01 / float(np.median(values[values > 0]))
    rows = [{
        "project_id": project_id, "session_id": f"00000000-0000-4000-8000-{i:012d}", "parent_session_id": None,
        "agent_name": SERIES_AGENT, "started_at": START + i * cadence, "duration_ms": 2000.0, "turn_count": 1,
        "llm_call_count": 1, "tool_call_count": 1, "tool_error_count": 0, "tokens_input": 1000,
        "tokens_output": 100, "tokens_total": 1100, "peak_tokens_input": 1000,
        "total_cost_usd": max(float(v) * scale, 0.0), "llm_latency_ms": 1500.0, "tool_latency_ms": 200.0,
        "tool_wall_ms": 200.0, "models": "model-a", "providers": "provider", "tool_sequence": "lookup",
        "status": "success", "user_satisfaction": 4.0, "confidence": 0.9,
    } for i, v in enumerate(values)]
    return conform(pl.DataFrame(rows, schema=SESSION_SCHEMA, orient="row"))


def series_days(frame: pl.DataFrame) -> range:
    last = frame.get_column("started_at").max()
    return range(0, (last - START).days + 1)


def tcpd_series() -> list[tuple[str, list[float], dict[str, list[int]]]]:
    """The Turing Change Point Dataset series that the ``river`` package ships (its
    ``river.drift.datasets``), as (name, values, annotations per annotator), cut and sampled
    the way TCPD publishes them so that the annotated indices line up: JFK passengers, UK coal
    employment, running pace (run_log), room CO2 (occupancy's 4th channel), Apple's close,
    Bitcoin's price and Brent's spot price. Raises ImportError without river."""
    from river.drift import datasets

    def column(dataset, name: str | None = None) -> list[float]:
        return [float(y if name is None else y[name]) for _, y in dataset]

    out = []
    for name, dataset, values in [
        ("jfk_passengers", datasets.AirlinePassengers(), None),
        ("uk_coal_employ", datasets.UKCoalEmploy(), None),
        ("run_log (pace)", datasets.RunLog(), "Pace"),
        ("occupancy (CO2)", datasets.Occupancy(), None),
        ("apple (close)", datasets.Apple(), "Close"),
        ("bitcoin", datasets.Bitcoin(), None),
        ("brent_spot", datasets.BrentSpotPrice(), None),
    ]:
        if name.startswith("occupancy"):
            series = column(dataset, "V4")
        elif name.startswith("apple"):
            series = column(dataset, "Close")[1:][::3]  # TCPD: the first day dropped, every third day
        elif name == "bitcoin":
            series = column(dataset)[:774]  # TCPD ends on 2019-06-19
        elif name == "brent_spot":
            rows = [(x["day"], float(y)) for x, y in dataset][::10]  # TCPD: every tenth day, from 2000
            series = [v for day, v in rows[next(i for i, (d, _) in enumerate(rows) if d.year >= 2000):]]
        else:
            series = column(dataset, values)
        out.append((name, series, {k: list(v) for k, v in dataset.annotations.items()}))
    return out


# TCPD's margin of error around an annotated change, in observations; an incident that opens
# within the margin is early, within the horizon after the change it still detects it.
LABEL_MARGIN = 5
DETECTION_HORIZON = 24
WARMUP = 20  # the first sessions have too little history to be judged (ml.anomaly MIN_HISTORY)


@dataclass
class SeriesScore:
    name: str
    sessions: int
    verdicts: int  # per-session verdicts (anomalies and regressions)
    incidents: int  # opened
    events: int  # consensus rises after the warm-up
    falls: int  # consensus falls (cheaper sessions: no cost detector's business)
    early: int  # events with an incident opened within the margin
    detected: int  # events with an incident opened by the horizon
    delays: list[int]  # observations from each detected change to its incident
    near_labels: int  # incidents near an annotated change that detect no consensus event (extra or minority)
    false: int  # incidents far from every annotated change


def consensus_changes(annotations: dict[str, list[int]], *, margin: int = LABEL_MARGIN) -> list[int]:
    """Changes most annotators marked: annotated points (all annotators together) linked when
    within ``margin`` of each other; a group marked by at least half of the annotators (those
    who marked nothing count too) is one change, starting at its earliest point."""
    points = sorted((p, who) for who, marked in annotations.items() for p in marked)
    groups: list[list[tuple[int, str]]] = []
    for point in points:
        if groups and point[0] - groups[-1][-1][0] <= margin:
            groups[-1].append(point)
        else:
            groups.append([point])
    needed = (len(annotations) + 1) // 2
    return [g[0][0] for g in groups if len({who for _, who in g}) >= needed]


def rises(values, change: int, *, around: int = 10) -> bool:
    """Whether the series is higher after the change: median of the 10 values after it at
    least 1.2x that of the 10 before. Streamed as cost, only a rise is a cost incident."""
    import numpy as np

    before, after = np.median(values[max(0, change - around):change]), np.median(values[change:change + around])
    return bool(after >= 1.2 * before)


def score_series(name: str, values, incidents: pl.DataFrame, annotations: dict[str, list[int]], *,
                 verdicts: int, cadence: timedelta = SERIES_CADENCE) -> SeriesScore:
    """Incidents of a streamed series against its annotations (see consensus_changes): the
    rises it should report early, and the incidents far from every annotated point."""
    opened = sorted(round((t - START) / cadence) for t in
                    incidents.filter(pl.col("opened_at").is_not_null()).get_column("opened_at").to_list())
    every = [c for c in consensus_changes(annotations) if c >= WARMUP]
    changes = [c for c in every if rises(values, c)]
    marked = sorted({p for ps in annotations.values() for p in ps})
    used: set[int] = set()
    delays, early = [], 0
    for change in changes:
        hits = [i for i, at in enumerate(opened) if i not in used and change - LABEL_MARGIN <= at <= change
                + DETECTION_HORIZON]
        if hits:
            used.add(hits[0])
            delays.append(opened[hits[0]] - change)
            early += opened[hits[0]] - change <= LABEL_MARGIN
    near = [i for i, at in enumerate(opened) if i not in used
            and any(p - LABEL_MARGIN <= at <= p + DETECTION_HORIZON for p in marked)]
    return SeriesScore(name=name, sessions=len(values), verdicts=verdicts, incidents=len(opened),
                       events=len(changes), falls=len(every) - len(changes),
                       early=early, detected=len(delays), delays=delays, near_labels=len(near),
                       false=len(opened) - len(used) - len(near))
