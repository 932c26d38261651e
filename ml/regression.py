"""Regressions: how a session differs from its agent's baseline, field by field.

Each field is held to the baseline's own spread, never to a fixed number, so what
the healthy agent does by design (a support agent's one-to-six turns, its optional
refund/FAQ/e-mail tools) is not a difference:

* ``tool_set``: a tool the baseline called in >= 90% of sessions was not called
  (major when the baseline always called it, >= 98%); tools the baseline never
  used were called (minor; major when two or more distinct ones);
* ``tool_order``: two tools ran in the opposite order to the one the baseline kept
  in >= 95% of the sessions that called both (minor);
* ``cost``: cost per LLM call far above the baseline's, both as a ratio to its
  median and in robust standard deviations of its log (IQR / 1.349): minor >= 1.5x
  and 4 sigma, major >= 2.5x and 6 sigma, critical >= 4x and 8 sigma;
* ``latency``: active time (LLM + tool wall time) per LLM call, the same way with
  the wider natural spread of latency in mind: minor >= 2x and 3.5 sigma, major
  >= 3x and 5 sigma, critical >= 5x and 7 sigma;
* ``turn_count``: more turns than the baseline ever had and than 1.25x its 99th
  percentile (minor), or at least twice that percentile (major);
* ``status``: an outcome status the baseline (almost) never ended with: under 1%
  even at the upper end of what its sample allows ((count + 3) / sessions);
* ``model``: a model the baseline never used (major: a model update changes behaviour).

The session's severity is that of its worst difference, raised to major when three
or more fields differ at once; its score sums the differences (severity points
plus magnitude), so higher is worse.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from ml.features import derive, millis, money, pct, times, to_json
from ml.verdicts import REGRESSION_SCHEMA, SEVERITIES, SEVERITY_RANK

MISSING_TOOL_SHARE = 0.90
ALWAYS_SHARE = 0.98
ORDER_SHARE = 0.95
RARE_STATUS = 0.01
RARE_MODEL = 0.01
SIGMA_FLOOR = 0.05
COST_LEVELS = ((4.0, 8.0, "critical"), (2.5, 6.0, "major"), (1.5, 4.0, "minor"))  # (ratio, sigmas, severity)
LATENCY_LEVELS = ((5.0, 7.0, "critical"), (3.0, 5.0, "major"), (2.0, 3.5, "minor"))
POINTS = {"minor": 1.0, "major": 3.0, "critical": 9.0}



def compare(sessions: pl.DataFrame, baseline: dict) -> pl.DataFrame:
    """The sessions (one agent) that regressed against ``baseline`` (a ``summarize()`` output)."""
    if sessions.is_empty():
        return pl.DataFrame(schema=REGRESSION_SCHEMA)
    f = derive(sessions).sort("started_at", "session_id")
    rows = []
    for session in f.iter_rows(named=True):
        differences = _differences(session, baseline)
        if differences:
            rows.append(_verdict(session, differences))
    return pl.DataFrame(rows, schema=REGRESSION_SCHEMA, orient="row") if rows else pl.DataFrame(schema=REGRESSION_SCHEMA)


def _verdict(session: dict, differences: list[dict]) -> dict:
    worst = max(SEVERITY_RANK[d["severity"]] for d in differences)
    if len({d["field"] for d in differences}) >= 3:
        worst = max(worst, SEVERITY_RANK["major"])
    ordered = sorted(differences, key=lambda d: (-SEVERITY_RANK[d["severity"]], -d["score"]))
    explanation = "; ".join(d["explanation"] for d in ordered[:3])
    if len(ordered) > 3:
        explanation += f"; and {len(ordered) - 3} more difference(s)"
    return {
        "session_id": session["session_id"],
        "agent_name": session["agent_name"],
        "severity": SEVERITIES[worst],
        "score": round(sum(d["score"] for d in differences), 4),
        "explanation": explanation[:1].upper() + explanation[1:] + ".",
        "differences": to_json([{k: d[k] for k in ("field", "baseline", "observed", "explanation", "severity")}
                                for d in ordered]),
    }


def _diff(field: str, baseline: Any, observed: Any, explanation: str, severity: str, magnitude: float) -> dict:
    return {"field": field, "baseline": baseline, "observed": observed, "explanation": explanation,
            "severity": severity, "score": POINTS[severity] + max(0.0, magnitude)}


def _differences(s: dict, b: dict) -> list[dict]:
    out: list[dict] = []
    out += _tool_set(s, b)
    out += _tool_order(s, b)
    metrics = b.get("metrics") or {}
    cost = _level(s.get("log_cost_per_call"), metrics.get("log_cost_per_call"), COST_LEVELS)
    if cost is not None:
        severity, ratio, sigmas, median = cost
        out.append(_diff("cost",
                         {"median_cost_per_call": median, "sigma_log": metrics["log_cost_per_call"]["sigma"]},
                         {"cost_usd": s["total_cost_usd"], "cost_per_call": s["cost_per_call"]},
                         f"cost {money(s['total_cost_usd'])} is {money(s['cost_per_call'])} per LLM call, "
                         f"{times(ratio)} the baseline median of {money(median)} ({sigmas:.0f} sigma)",
                         severity, math.log(ratio)))
    latency = _level(s.get("log_latency_per_call"), metrics.get("log_latency_per_call"), LATENCY_LEVELS)
    if latency is not None:
        severity, ratio, sigmas, median = latency
        out.append(_diff("latency",
                         {"median_latency_per_call_ms": median,
                          "sigma_log": metrics["log_latency_per_call"]["sigma"]},
                         {"active_ms": s["active_ms"], "latency_per_call_ms": s["latency_per_call"]},
                         f"active time {millis(s['latency_per_call'])} per LLM call is {times(ratio)} the "
                         f"baseline median of {millis(median)} ({sigmas:.0f} sigma)",
                         severity, math.log(ratio)))
    out += _turns(s, metrics.get("turn_count"))
    out += _status(s, b)
    out += _models(s, b)
    return out


def _level(value: float | None, stats: dict | None, levels) -> tuple[str, float, float, float] | None:
    """(severity, ratio to median, sigmas, median) when a log measure is far above the baseline."""
    if value is None or stats is None or stats.get("median") is None or (isinstance(value, float) and math.isnan(value)):
        return None
    sigma = max(stats.get("sigma") or 0.0, SIGMA_FLOOR)
    gap = value - stats["median"]
    ratio, sigmas = math.exp(gap), gap / sigma
    for min_ratio, min_sigmas, severity in levels:
        if ratio >= min_ratio and sigmas >= min_sigmas:
            return severity, ratio, sigmas, math.exp(stats["median"])
    return None


def _tool_set(s: dict, b: dict) -> list[dict]:
    frequency: dict[str, float] = b.get("tool_frequency") or {}
    if not frequency:
        return []
    tools = set(s["tools"])
    out = []
    missing = sorted((t for t, share in frequency.items() if share >= MISSING_TOOL_SHARE and t not in tools),
                     key=lambda t: (-frequency[t], t))
    if missing:
        top = frequency[missing[0]]
        names = ", ".join(f"{t} (used in {pct(frequency[t])} of baseline sessions)" for t in missing)
        out.append(_diff("tool_set", {t: frequency[t] for t in missing}, sorted(tools),
                         f"{'tool' if len(missing) == 1 else 'tools'} {names} "
                         f"{'was' if len(missing) == 1 else 'were'} not called",
                         "major" if top >= ALWAYS_SHARE else "minor", sum(frequency[t] for t in missing)))
    new = sorted(t for t in tools if t not in frequency)
    if new:
        out.append(_diff("tool_set", sorted(frequency), new,
                         f"{len(new)} tool(s) never used in the baseline were called: {', '.join(new[:5])}"
                         + ("..." if len(new) > 5 else ""),
                         "major" if len(new) >= 2 else "minor", 0.5 * len(new)))
    return out


def _tool_order(s: dict, b: dict) -> list[dict]:
    order: dict[str, float] = b.get("tool_pair_order") or {}
    sequence = s["tool_sequence"].split(",") if s["tool_sequence"] else []
    if not order or len(sequence) < 2:
        return []
    first: dict[str, int] = {}
    for i, tool in enumerate(sequence):
        first.setdefault(tool, i)
    flipped = []
    for pair, share in order.items():
        a, _, c = pair.partition(">")
        if share >= ORDER_SHARE and a in first and c in first and first[c] < first[a]:
            flipped.append((a, c, share))
    if not flipped:
        return []
    flipped.sort(key=lambda x: (-x[2], x[0], x[1]))
    a, c, share = flipped[0]
    usual = b.get("usual_tool_order") or []
    return [_diff("tool_order", {"usual_order": usual, "pairs": {f"{x}>{y}": v for x, y, v in flipped}},
                  sequence[:20],
                  f"{c} ran before {a}, the reverse of the baseline order kept in {pct(share)} of sessions"
                  + (f" (and {len(flipped) - 1} other pair(s))" if len(flipped) > 1 else ""),
                  "minor", 0.5 * len(flipped))]


def _turns(s: dict, stats: dict | None) -> list[dict]:
    if not stats or stats.get("q99") is None:
        return []
    q99, top = stats["q99"], stats["max"]
    turns = s["turn_count"]
    if turns > max(top, math.ceil(1.25 * q99)):
        severity = "major" if turns >= 2 * q99 else "minor"
        return [_diff("turn_count", {"q99": q99, "max": top, "median": stats["median"]}, turns,
                      f"{turns} turns, more than the baseline ever had ({top:g}; median {stats['median']:g})",
                      severity, turns / max(q99, 1) - 1)]
    return []


def _status(s: dict, b: dict) -> list[dict]:
    rates: dict[str, float] = b.get("status_rates") or {}
    if not rates:
        return []
    share = rates.get(s["status"], 0.0)
    n = b.get("session_count") or 0
    # rare even at the upper end of what the baseline's sample allows (the "rule of three")
    if n and (share * n + 3) / n < RARE_STATUS:
        return [_diff("status", rates, s["status"],
                      f"ended with status {s['status']!r}, seen in {pct(share, 1)} of baseline sessions",
                      "minor", 1 - share)]
    return []


def _models(s: dict, b: dict) -> list[dict]:
    shares: dict[str, float] = b.get("models") or {}
    if not shares:
        return []
    new = [m for m in s["model_list"] if shares.get(m, 0.0) < RARE_MODEL]
    if not new:
        return []
    usual = sorted(shares, key=lambda m: (-shares[m], m))
    return [_diff("model", shares, s["models"],
                  f"model {', '.join(new)} answered instead of the baseline's {', '.join(usual[:2])}",
                  "major", 1.0)]
