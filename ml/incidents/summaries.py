"""What an incident says: figures gathered from its verdicts' details, and the sentence
that tells an on-call engineer what changed, in numbers.

Each verdict is reduced to a few observations (``observe``): numbers (a cost ratio,
the usual cost per call, a share) and names (a new model, a missing tool). An incident
keeps, per observation, count / sum / min / max / last of the numbers and a count per
name (``Figures``); folding verdicts in time order gives the same figures however
they were batched. ``render`` turns them into the summary, e.g. "Cost per LLM call
3.7x the trailing 7-day median ($0.0031 -> $0.0115, up to 6.1x) on 142 sessions, 96%
of customer-support-agent's traffic since 2025-11-03 10:05 UTC".
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ml.features import millis, money, pct, times

Observation = dict[str, Any]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def observe(verdict_type: str, details: str | None) -> Observation:
    """{"n": {name: number}, "names": {group: [names]}} from one verdict's details."""
    try:
        d = json.loads(details) if details else {}
    except ValueError:
        d = {}
    n: dict[str, float | None] = {}
    names: dict[str, list[str]] = {}
    if verdict_type == "regression" and isinstance(d, list):
        return _observe_regression(d)
    if not isinstance(d, dict):
        return {"n": {}, "names": {}}
    get = d.get
    if verdict_type == "cost_spike":
        n = {"ratio": get("ratio_to_median"), "usual": get("trailing_median_per_call"), "observed": get("cost_per_call")}
    elif verdict_type == "latency_spike":
        n = {"ratio": get("ratio_to_median"), "usual": get("trailing_median_per_call_ms"),
             "observed": get("latency_per_call_ms")}
    elif verdict_type == "cost_creep":
        n = {"level": get("recent_level_ratio"), "trend": get("trend_per_day"),
             "usual": get("usual_cost_per_call_same_length"), "observed": get("cost_per_call")}
    elif verdict_type == "tool_usage_change":
        missing = get("missing_tools") or {}
        names = {"missing": sorted(missing)}
        n = {f"usual_share:{tool}": (v or {}).get("share") for tool, v in missing.items()}
    elif verdict_type == "model_change":
        names = {"new": list(get("new_models") or []), "usual": list(get("baseline_models") or [])[:1]}
    elif verdict_type == "skill_bloat":
        names = {"new": list(get("new_tools") or [])}
        n = {"tool_calls": get("tool_calls"), "tool_errors": get("tool_errors"), "usual_error_rate": get("usual_error_rate")}
    elif verdict_type == "context_rot":
        n = {"turns": get("turn_count"), "usual_turns": get("usual_turn_q99"), "growth": get("context_growth")}
    elif verdict_type == "confident_hallucination":
        n = {"confidence": get("confidence"), "satisfaction": get("user_satisfaction"),
             "usual_satisfaction": get("usual_success_satisfaction")}
    elif verdict_type == "sequential_tax":
        n = {"parallelism": get("parallelism"), "usual": get("usual_parallelism"), "extra_ms": get("extra_wall_ms")}
    elif verdict_type == "cascade_failure":
        names = {"child": [get("failed_child_agent")] if get("failed_child_agent") else []}
        n = {"usual_rate": get("usual_rate"), "recent": get("recent_cascades"), "recent_of": get("recent_sessions")}
    elif verdict_type == "tool_share_shift":
        tool = get("tool")
        names = {"tool": [f"{tool}:{get('direction')}"] if tool else []}
        n = {f"window_share:{tool}": get("window_share"), f"reference_share:{tool}": get("reference_share"),
             f"window:{tool}": get("window_sessions")}
    elif verdict_type == "isolation_forest":
        deviations = get("deviations_sigma") or {}
        top = sorted(deviations, key=lambda k: (-abs(deviations[k] or 0), k))[:1]
        names = {"feature": top}
        n = {"score": get("score")}
    return {"n": {k: v for k, v in ((k, _number(v)) for k, v in n.items()) if v is not None},
            "names": {k: [str(x) for x in v if x] for k, v in names.items()}}


def _observe_regression(differences: list) -> Observation:
    n: dict[str, float] = {}
    names: dict[str, list[str]] = {"field": []}
    for diff in differences:
        if not isinstance(diff, dict):
            continue
        field = diff.get("field")
        base, seen = diff.get("baseline"), diff.get("observed")
        names["field"].append(str(field))
        if field == "cost" and isinstance(base, dict) and isinstance(seen, dict):
            usual, observed = _number(base.get("median_cost_per_call")), _number(seen.get("cost_per_call"))
            if usual and observed:
                n.update({"cost_ratio": observed / usual, "cost_usual": usual})
        elif field == "latency" and isinstance(base, dict) and isinstance(seen, dict):
            usual, observed = _number(base.get("median_latency_per_call_ms")), _number(seen.get("latency_per_call_ms"))
            if usual and observed:
                n.update({"latency_ratio": observed / usual, "latency_usual": usual})
        elif field == "model" and isinstance(base, dict):
            names["model_usual"] = sorted(base, key=lambda m: (-(_number(base[m]) or 0), m))[:1]
            names["model_new"] = [m for m in str(seen or "").split(",") if m and (_number(base.get(m)) or 0) < 0.01]
        elif field == "tool_set" and isinstance(base, dict):
            names["tool_missing"] = sorted(base)
        elif field == "tool_set":
            names["tool_new"] = [str(t) for t in (seen or [])]
    return {"n": n, "names": names}


class Figures:
    """Per (verdict type, observation): numbers as [count, sum, min, max, last] and names
    with their counts; JSON-serialisable as is."""

    def __init__(self, data: dict | None = None) -> None:
        self.data: dict = data or {"n": {}, "names": {}}

    def add(self, verdict_type: str, observation: Observation) -> None:
        for name, value in observation["n"].items():
            key = f"{verdict_type}.{name}"
            current = self.data["n"].get(key)
            if current is None:
                self.data["n"][key] = [1, value, value, value, value]
            else:
                current[0] += 1
                current[1] += value
                current[2] = min(current[2], value)
                current[3] = max(current[3], value)
                current[4] = value
        for group, values in observation["names"].items():
            counts = self.data["names"].setdefault(f"{verdict_type}.{group}", {})
            for value in values:
                counts[value] = counts.get(value, 0) + 1

    def mean(self, key: str) -> float | None:
        v = self.data["n"].get(key)
        return v[1] / v[0] if v else None

    def top(self, key: str) -> float | None:
        v = self.data["n"].get(key)
        return v[3] if v else None

    def last(self, key: str) -> float | None:
        v = self.data["n"].get(key)
        return v[4] if v else None

    def names(self, key: str) -> list[str]:
        """Names of a group, most frequent first (ties by name)."""
        counts = self.data["names"].get(key) or {}
        return sorted(counts, key=lambda name: (-counts[name], name))

    def count(self, key: str, name: str) -> int:
        return (self.data["names"].get(key) or {}).get(name, 0)

    def to_json(self) -> str:
        return json.dumps(self.data, sort_keys=True, separators=(",", ":"))


def render(kind: str, agent: str, figures: Figures, *, affected: int, share: float | None,
           first_seen: datetime, verdicts: int) -> str:
    """The incident's summary: what changed, in numbers, then how much traffic it touches."""
    what = _what_changed(kind, figures) or f"{verdicts:,} {kind.replace('_', ' ')} verdict(s)"
    traffic = f"{affected:,} session{'s' if affected != 1 else ''}"
    if share is not None:
        traffic += f", {pct(share)} of {agent}'s traffic"
    return f"{what} on {traffic} since {first_seen:%Y-%m-%d %H:%M} UTC"


def _ratio_text(label: str, mean: float | None, top: float | None, usual: float | None,
                unit, reference: str) -> str | None:
    if mean is None:
        return None
    text = f"{label} {times(mean)} {reference}"
    detail = []
    if usual is not None:
        detail.append(f"{unit(usual)} -> {unit(usual * mean)}")
    if top is not None and top >= mean * 1.1:
        detail.append(f"up to {times(top)}")
    return text + (f" ({', '.join(detail)})" if detail else "")


def _what_changed(kind: str, f: Figures) -> str | None:
    k = kind
    if k == "cost_spike":
        return _ratio_text("Cost per LLM call", f.mean("cost_spike.ratio"), f.top("cost_spike.ratio"),
                           f.mean("cost_spike.usual"), money, "the trailing 7-day median")
    if k == "latency_spike":
        return _ratio_text("Active time per LLM call", f.mean("latency_spike.ratio"), f.top("latency_spike.ratio"),
                           f.mean("latency_spike.usual"), millis, "the trailing 7-day median")
    if k == "cost_creep":
        level, trend = f.last("cost_creep.level"), f.last("cost_creep.trend")
        if level is None:
            return None
        text = f"Cost per LLM call crept up to {times(level)} its usual level for sessions of the same length"
        return text + (f", rising {pct(trend)} a day" if trend is not None else "")
    if k == "tool_usage_change":
        missing = f.names("tool_usage_change.missing")
        if not missing:
            return None
        parts = [f"tool {t} (called by {pct(f.top(f'tool_usage_change.usual_share:{t}'))} of sessions before)"
                 for t in missing[:3]]
        return "No longer called: " + "; ".join(parts)
    if k == "model_change":
        new, usual = f.names("model_change.new"), f.names("model_change.usual")
        if not new:
            return None
        return f"Model {usual[0] if usual else '(usual)'} -> {', '.join(new[:3])}"
    if k == "skill_bloat":
        new = f.names("skill_bloat.new")
        calls, errors = f.data["n"].get("skill_bloat.tool_calls"), f.data["n"].get("skill_bloat.tool_errors")
        text = f"{len(new)} tool(s) new to the agent ({', '.join(new[:4])}{'...' if len(new) > 4 else ''})"
        if calls and errors and calls[1]:
            text += (f" with {pct(errors[1] / calls[1])} of tool calls failing (usually "
                     f"{pct(f.mean('skill_bloat.usual_error_rate'), 1)})")
        return text
    if k == "context_rot":
        turns, usual, growth = f.mean("context_rot.turns"), f.mean("context_rot.usual_turns"), f.mean("context_rot.growth")
        if turns is None:
            return None
        return (f"Sessions of {turns:.1f} turns on average (usual 99th percentile {usual:g}) with prompts "
                f"{times(growth or 1)} the usual largest")
    if k == "confident_hallucination":
        conf, sat = f.mean("confident_hallucination.confidence"), f.mean("confident_hallucination.satisfaction")
        usual = f.mean("confident_hallucination.usual_satisfaction")
        if conf is None:
            return None
        return (f"Successes reported with confidence {conf:.2f} rated {sat:.1f}/5 by their users"
                + (f" (successes usually {usual:g})" if usual is not None else ""))
    if k == "sequential_tax":
        par, usual, extra = (f.mean("sequential_tax.parallelism"), f.mean("sequential_tax.usual"),
                             f.mean("sequential_tax.extra_ms"))
        if par is None:
            return None
        return (f"Tool calls ran one after another (parallelism {par:.2f} vs {usual:.2f} usually), "
                f"{millis(extra)} of extra tool time per session")
    if k == "cascade_failure":
        child = f.names("cascade_failure.child")
        rate = f.mean("cascade_failure.usual_rate")
        if not child:
            return None
        return (f"Failures propagating from {', '.join(child[:2])} (usual rate {pct(rate)}; latest: "
                f"{f.last('cascade_failure.recent'):.0f} of {f.last('cascade_failure.recent_of'):.0f} sessions in 6 h)")
    if k == "tool_share_shift":
        shifted = f.names("tool_share_shift.tool")
        if not shifted:
            return None
        tool, _, direction = shifted[0].partition(":")
        now, before = f.last(f"tool_share_shift.window_share:{tool}"), f.last(f"tool_share_shift.reference_share:{tool}")
        window = f.last(f"tool_share_shift.window:{tool}")
        verb = "gone from" if direction == "dropped" and (now or 0) < 0.05 else direction
        text = (f"Tool {tool} {verb} {pct(before)} of sessions: {pct(now)} of the latest {window:.0f}"
                if verb.startswith("gone") else
                f"Tool {tool} {direction} from {pct(before)} of sessions to {pct(now)} of the latest {window:.0f}")
        return text
    if k == "regression":
        return _regression_text(f)
    if k == "isolation_forest":
        features = f.names("isolation_forest.feature")
        return "Sessions unlike the agent's last 7 days" + (f" (most unusual: {', '.join(features[:2])})"
                                                           if features else "")
    return None


def _regression_text(f: Figures) -> str | None:
    fields = f.names("regression.field")
    if not fields:
        return None
    parts = []
    for field in fields[:3]:
        if field == "cost" and f.mean("regression.cost_ratio") is not None:
            parts.append(f"cost per call {times(f.mean('regression.cost_ratio'))} the baseline median")
        elif field == "latency" and f.mean("regression.latency_ratio") is not None:
            parts.append(f"active time per call {times(f.mean('regression.latency_ratio'))} the baseline median")
        elif field == "model" and f.names("regression.model_new"):
            usual = f.names("regression.model_usual")
            parts.append(f"model {usual[0] if usual else '(baseline)'} -> {', '.join(f.names('regression.model_new')[:2])}")
        elif field == "tool_set" and f.names("regression.tool_missing"):
            parts.append(f"tool {', '.join(f.names('regression.tool_missing')[:2])} not called")
        elif field == "tool_set" and f.names("regression.tool_new"):
            parts.append(f"new tools {', '.join(f.names('regression.tool_new')[:3])}")
        else:
            parts.append(field.replace("_", " "))
    return "Differs from the baseline: " + "; ".join(parts)
