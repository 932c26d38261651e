"""An agent's baseline: what it normally does, measured over a stable window of its history.

``find_stable_window`` looks for the *first* stretch of an agent's history that is
representative: the earliest window (24 h; 72 h or 7 days for agents too quiet to
fill a day) holding enough sessions whose first and second halves agree on what
matters (cost per LLM call and active latency per call, by median and by mean of
their logs, success rate, how often each tool is used, which model answers). Halves that disagree mean the agent was still
changing (a rollout, a warm-up); the search moves on an hour at a time. The
tolerance of each check is relative: a fixed floor (25% on cost, 10 points on
success...) widened by three standard errors so a quiet agent is not held to the
precision of a busy one. Candidates start on whole hours after the first session
and must have fully elapsed in the data, so the answer depends only on the frame.

``summarize`` turns the window's sessions into plain JSON: tool frequencies and the
usual pairwise order of tools, quantiles of cost/latency per call (as logs, with a
robust spread), of turns and context size, tool parallelism and error rate, status
and model shares, and confidence/satisfaction of successes and failures. It is what
``regression.compare`` and ``anomaly.detect`` compare sessions to; a user-pinned
baseline is the same summary over a time range the user picks.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta
from itertools import permutations
from typing import Any

import numpy as np
import polars as pl

from ml.features import IQR_TO_SIGMA, clean_number, derive, iso

WINDOW_LENGTHS = (timedelta(hours=24), timedelta(hours=72), timedelta(days=7))
STEP = timedelta(hours=1)
MIN_SESSIONS = 40  # in the whole window
MIN_HALF = 15  # in each half
# Tolerances between the halves: a floor, widened to three standard errors.
COST_TOLERANCE = math.log(1.25)
LATENCY_TOLERANCE = math.log(1.5)
RATE_TOLERANCE = 0.10
TOOL_TOLERANCE = 0.15
COMMON_TOOL = 0.2  # tools used by fewer sessions are not compared between halves
# Pairwise tool order is kept for tools used at least this often, pairs seen this often.
ORDER_TOOL_SHARE = 0.2
ORDER_MIN_PAIRS = 10
MIN_BUCKET = 5  # sessions of one length needed for its cost-per-call median


def find_stable_window(sessions: pl.DataFrame) -> tuple[datetime, datetime] | None:
    """The first stable window [start, end) of one agent's history, or None if there is none yet."""
    if sessions.is_empty():
        return None
    f = derive(sessions).sort("started_at", "session_id")
    times = f.get_column("started_at").dt.epoch("us").to_numpy()
    first = f.get_column("started_at").min()
    last = f.get_column("started_at").max()
    origin = first.replace(minute=0, second=0, microsecond=0)
    columns = _window_columns(f)
    for length in WINDOW_LENGTHS:
        start = origin
        while start + length <= last:
            lo = int(np.searchsorted(times, _us(start), "left"))
            mid = int(np.searchsorted(times, _us(start + length / 2), "left"))
            hi = int(np.searchsorted(times, _us(start + length), "left"))
            if hi - lo >= MIN_SESSIONS and mid - lo >= MIN_HALF and hi - mid >= MIN_HALF:
                if _halves_agree(columns, lo, mid, hi):
                    return start, start + length
            start += STEP
    return None


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _window_columns(f: pl.DataFrame) -> dict[str, Any]:
    tools = f.get_column("tools").to_list()
    return {
        "cost": f.get_column("log_cost_per_call").to_numpy(),
        "latency": f.get_column("log_latency_per_call").to_numpy(),
        "ok": f.get_column("ok").to_numpy().astype(float),
        "tools": tools,
        "model": [models[0] if len(models) == 1 else ",".join(models) for models in f.get_column("model_list").to_list()],
    }


def _halves_agree(c: dict[str, Any], lo: int, mid: int, hi: int) -> bool:
    for key, floor in (("cost", COST_TOLERANCE), ("latency", LATENCY_TOLERANCE)):
        a, b = c[key][lo:mid], c[key][mid:hi]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if len(a) == 0 and len(b) == 0:
            continue
        if len(a) < MIN_HALF // 2 or len(b) < MIN_HALF // 2:
            return False
        both = np.concatenate([a, b])
        q25, q75 = np.quantile(both, [0.25, 0.75])
        sigma = max((q75 - q25) / IQR_TO_SIGMA, 1e-3)
        spread = math.sqrt(1 / len(a) + 1 / len(b))
        # medians (robust) and means (which a minority of unusual sessions moves) must both agree
        if abs(np.median(a) - np.median(b)) > max(floor, 3 * 1.25 * sigma * spread):
            return False
        if abs(a.mean() - b.mean()) > max(floor, 3 * max(float(both.std()), 1e-3) * spread):
            return False
    na, nb = mid - lo, hi - mid
    ok_a, ok_b = c["ok"][lo:mid].mean(), c["ok"][mid:hi].mean()
    p = (ok_a * na + ok_b * nb) / (na + nb)
    if abs(ok_a - ok_b) > max(RATE_TOLERANCE, 3 * math.sqrt(max(p * (1 - p), 1e-4) * (1 / na + 1 / nb))):
        return False
    counts_a = Counter(t for tools in c["tools"][lo:mid] for t in tools)
    counts_b = Counter(t for tools in c["tools"][mid:hi] for t in tools)
    for tool in set(counts_a) | set(counts_b):
        fa, fb = counts_a[tool] / na, counts_b[tool] / nb
        p = (counts_a[tool] + counts_b[tool]) / (na + nb)
        if p < COMMON_TOOL:
            continue
        if abs(fa - fb) > max(TOOL_TOLERANCE, 3 * math.sqrt(p * (1 - p) * (1 / na + 1 / nb))):
            return False
    model_a = Counter(c["model"][lo:mid]).most_common(1)
    model_b = Counter(c["model"][mid:hi]).most_common(1)
    return model_a[:1] == [] or model_b[:1] == [] or model_a[0][0] == model_b[0][0]


def _quantiles(values: np.ndarray, log_scale: bool = False) -> dict[str, Any] | None:
    values = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    if len(values) == 0:
        return None
    q = np.quantile(values, [0.01, 0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99])
    out = {name: clean_number(v) for name, v in zip(("q01", "q05", "q25", "median", "q75", "q90", "q95", "q99"), q, strict=True)}
    out["min"] = clean_number(values.min())
    out["max"] = clean_number(values.max())
    out["mean"] = clean_number(values.mean())
    out["count"] = int(len(values))
    if log_scale:
        out["sigma"] = clean_number((q[4] - q[2]) / IQR_TO_SIGMA)
    return out


def _column(f: pl.DataFrame, name: str) -> np.ndarray:
    return f.get_column(name).cast(pl.Float64).to_numpy()


def summarize(window_sessions: pl.DataFrame) -> dict:
    """JSON-serialisable baseline metrics of one agent's sessions (see the module docstring)."""
    f = derive(window_sessions).sort("started_at", "session_id")
    n = f.height
    agents = Counter(f.get_column("agent_name").to_list())
    tool_lists = f.get_column("tools").to_list()
    sequences = [s.split(",") if s else [] for s in f.get_column("tool_sequence").to_list()]
    tool_sessions = Counter(t for tools in tool_lists for t in tools)
    tool_frequency = {t: c / n for t, c in sorted(tool_sessions.items())} if n else {}

    # Usual order: for each pair of frequent tools, the share of sessions with both in
    # which the first call of one came before the first call of the other.
    frequent = sorted(t for t, share in tool_frequency.items() if share >= ORDER_TOOL_SHARE)
    before: Counter = Counter()
    together: Counter = Counter()
    positions: dict[str, list[int]] = {t: [] for t in frequent}
    for sequence in sequences:
        first: dict[str, int] = {}
        for i, tool in enumerate(sequence):
            first.setdefault(tool, i)
        for tool in frequent:
            if tool in first:
                positions[tool].append(first[tool])
        for a, b in permutations([t for t in frequent if t in first], 2):
            if a < b:
                together[(a, b)] += 1
            if first[a] < first[b]:
                before[(a, b)] += 1
    pair_order = {}
    for (a, b), count in sorted(together.items()):
        if count >= ORDER_MIN_PAIRS:
            pair_order[f"{a}>{b}"] = before[(a, b)] / count
            pair_order[f"{b}>{a}"] = before[(b, a)] / count
    usual_order = sorted(frequent, key=lambda t: (float(np.mean(positions[t])) if positions[t] else 1e9, t))

    statuses = Counter(f.get_column("status").to_list())
    models = Counter(m for ms in f.get_column("model_list").to_list() for m in ms)
    providers = Counter(p for ps in f.get_column("providers").to_list() for p in (ps.split(",") if ps else []))
    ok = f.get_column("ok").to_numpy()
    conf = _column(f, "confidence")
    sat = _column(f, "user_satisfaction")
    calls = int(f.get_column("tool_call_count").sum() or 0)
    errors = int(f.get_column("tool_error_count").sum() or 0)
    started = f.get_column("started_at")
    by_calls = (f.filter(pl.col("log_cost_per_call").is_not_null())
                .group_by("calls_bucket").agg(pl.col("log_cost_per_call").median().alias("median"), pl.len().alias("count"))
                .filter(pl.col("count") >= MIN_BUCKET).sort("calls_bucket"))
    return {
        "version": 1,
        "agent_name": agents.most_common(1)[0][0] if agents else None,
        "session_count": n,
        "first_session_at": iso(started.min()) if n else None,
        "last_session_at": iso(started.max()) if n else None,
        "tool_frequency": {t: clean_number(v) for t, v in tool_frequency.items()},
        "tool_pair_order": {k: clean_number(v) for k, v in pair_order.items()},
        "usual_tool_order": usual_order,
        "tool_error_rate": clean_number(errors / calls) if calls else None,
        "tool_calls": calls,
        "status_rates": {s: clean_number(c / n) for s, c in sorted(statuses.items())},
        "success_rate": clean_number(float(ok.mean())) if n else None,
        "models": {m: clean_number(c / n) for m, c in sorted(models.items())},
        "providers": {p: clean_number(c / n) for p, c in sorted(providers.items())},
        # median log cost per LLM call of sessions with the same number of calls (capped)
        "log_cost_per_call_by_calls": {str(r["calls_bucket"]): {"median": clean_number(r["median"]),
                                                                "count": int(r["count"])}
                                       for r in by_calls.iter_rows(named=True)},
        "metrics": {
            "cost_usd": _quantiles(_column(f, "total_cost_usd")),
            "log_cost_per_call": _quantiles(_column(f, "log_cost_per_call"), log_scale=True),
            "log_latency_per_call": _quantiles(_column(f, "log_latency_per_call"), log_scale=True),
            "log_output_per_call": _quantiles(_column(f, "log_output_per_call"), log_scale=True),
            "active_ms": _quantiles(_column(f, "active_ms")),
            "turn_count": _quantiles(_column(f, "turn_count")),
            "tool_call_count": _quantiles(_column(f, "tool_call_count")),
            "tools_per_turn": _quantiles(_column(f, "tools_per_turn")),
            "peak_tokens_input": _quantiles(_column(f, "peak_tokens_input")),
            "parallelism": _quantiles(_column(f, "parallelism")),
        },
        "success_confidence": _quantiles(conf[ok & ~np.isnan(conf)]),
        "success_satisfaction": _quantiles(sat[ok & ~np.isnan(sat)]),
        "failure_satisfaction": _quantiles(sat[~ok & ~np.isnan(sat)]),
    }
