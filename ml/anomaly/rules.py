"""The seed's rules, made robust: cost_spike, latency_spike, tool_usage_change
(see the package docstring for the thresholds)."""

from __future__ import annotations

import math

import polars as pl

from ml.anomaly.history import MIN_HISTORY, SIGMA_FLOOR, robust_sigma
from ml.features import IQR_TO_SIGMA, millis, money, pct, times
from ml.verdicts import build, no_anomalies

SPIKE_SIGMAS = 3.0
LATENCY_SIGMAS = 3.5
COST_SPIKE_RATIO = 1.5
COST_LEVELS = ((3.0, 6.0, "critical"), (2.0, 4.5, "major"))
LATENCY_MEAN_RATIO = 2.0
LATENCY_RECENT_MIN = 5
LATENCY_SUSTAINED = 1.75  # session and recent median both this far above the median
# ... and the recent median that far above by 3 of its standard errors (robust sigma x 1.25 /
# sqrt(n)): five sessions of a quiet agent at night are a small sample of a wide distribution
# (the simulated retriever's slowest hour of a clean week had a median of 1.8x at 2.1 errors).
LATENCY_RECENT_Z = 3.0
LATENCY_MAJOR_SIGMAS = 5.0
COMMON_TOOL = 0.8
ALWAYS_TOOL = 0.95


def cost_spike(j: pl.DataFrame) -> pl.DataFrame:
    rows = j.filter((pl.col("h_cost_n") >= MIN_HISTORY) & pl.col("log_cost_per_call").is_not_null()
                    & (pl.col("log_cost_per_call") - pl.col("h_cost_med") >= math.log(COST_SPIKE_RATIO)))

    def judge(r: dict):
        sigma = robust_sigma(r["h_cost_q25"], r["h_cost_q75"])
        gap = r["log_cost_per_call"] - r["h_cost_med"]
        z, ratio = gap / sigma, math.exp(gap)
        if z < SPIKE_SIGMAS:
            return None
        severity = next((s for min_ratio, min_z, s in COST_LEVELS if ratio >= min_ratio and z >= min_z), "minor")
        median = math.exp(r["h_cost_med"])
        return severity, z, (
            f"cost per LLM call {money(r['cost_per_call'])} is {times(ratio)} this agent's trailing 7-day median "
            f"({money(median)}) and {z:.1f} sigma above it (session cost {money(r['total_cost_usd'])} "
            f"over {r['llm_call_count']} call(s))"), {
            "cost_usd": r["total_cost_usd"], "cost_per_call": r["cost_per_call"], "llm_calls": r["llm_call_count"],
            "tokens_input": r["tokens_input"], "trailing_median_per_call": median,
            "trailing_mean_per_call": r["h_cpc_mean"], "trailing_std_per_call": r["h_cpc_std"],
            "ratio_to_median": ratio, "sigmas": z, "history_sessions": int(r["h_cost_n"])}

    return build(rows, "cost_spike", judge)


def latency_spike(j: pl.DataFrame) -> pl.DataFrame:
    sigma = pl.max_horizontal((pl.col("h_lat_q75") - pl.col("h_lat_q25")) / IQR_TO_SIGMA, pl.lit(SIGMA_FLOOR))
    recent_z = (pl.col("r_lat_med") - pl.col("h_lat_med")) / (1.25 * sigma / pl.col("r_lat_n").sqrt())
    recent = (pl.when((pl.col("r_lat_n") >= LATENCY_RECENT_MIN) & (recent_z >= LATENCY_RECENT_Z))
              .then((pl.col("r_lat_med") - pl.col("h_lat_med")).exp()))
    gap = pl.col("log_latency_per_call") - pl.col("h_lat_med")
    rows = (j.filter((pl.col("h_lat_n") >= MIN_HISTORY) & pl.col("latency_per_call").is_not_null())
            .with_columns(recent.alias("recent_ratio"), gap.exp().alias("ratio"))
            .filter(((pl.col("latency_per_call") >= LATENCY_MEAN_RATIO * pl.col("h_lpc_mean"))
                     | ((pl.col("ratio") >= LATENCY_SUSTAINED) & (pl.col("recent_ratio") >= LATENCY_SUSTAINED)))))

    def judge(r: dict):
        sigma = robust_sigma(r["h_lat_q25"], r["h_lat_q75"])
        z, ratio, recent = math.log(r["ratio"]) / sigma, r["ratio"], r["recent_ratio"]
        sustained = recent is not None and recent >= LATENCY_SUSTAINED and ratio >= LATENCY_SUSTAINED
        if z < LATENCY_SIGMAS and not sustained:
            return None
        if sustained and ratio >= 2.5 and recent >= 2.0:
            severity = "critical"
        elif sustained or z >= LATENCY_MAJOR_SIGMAS:
            severity = "major"
        else:
            severity = "minor"
        median = math.exp(r["h_lat_med"])
        text = (f"active time {millis(r['latency_per_call'])} per LLM call is {times(ratio)} this agent's trailing "
                f"7-day median ({millis(median)}; mean {millis(r['h_lpc_mean'])}), {z:.1f} sigma above it")
        if sustained:
            text += f"; its sessions of the last 2 h ran at {times(recent)} the median too"
        return severity, z, text, {
            "active_ms": r["active_ms"], "latency_per_call_ms": r["latency_per_call"],
            "llm_latency_ms": r["llm_latency_ms"], "tool_wall_ms": r["tool_wall_ms"],
            "duration_ms": r["duration_ms"], "trailing_median_per_call_ms": median,
            "trailing_mean_per_call_ms": r["h_lpc_mean"], "ratio_to_median": ratio,
            "ratio_to_mean": r["latency_per_call"] / r["h_lpc_mean"], "sigmas": z,
            "recent_ratio": recent, "recent_sessions": int(r["r_lat_n"] or 0), "history_sessions": int(r["h_lat_n"])}

    return build(rows, "latency_spike", judge)


def missing_tools(j: pl.DataFrame, tools: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
    """Per judged session: the commonly used tools (trailing or baseline) it did not call."""
    trailing = (tools.filter(~pl.col("in_session") & (pl.col("history") >= MIN_HISTORY)
                             & (pl.col("share") >= COMMON_TOOL))
                .select("session_id", "name", pl.col("share").alias("trailing_share")))
    rows = []
    for r in j.select("session_id", "agent_name", "tools", "b_usable").iter_rows(named=True):
        b = baselines.get(r["agent_name"])
        if not r["b_usable"] or not b:
            continue
        for name, share in (b.get("tool_frequency") or {}).items():
            if share >= COMMON_TOOL and name not in r["tools"]:
                rows.append({"session_id": r["session_id"], "name": name, "baseline_share": float(share)})
    base = pl.DataFrame(rows, schema={"session_id": pl.Utf8, "name": pl.Utf8, "baseline_share": pl.Float64})
    both = trailing.join(base, on=["session_id", "name"], how="full", coalesce=True)
    return both.with_columns(pl.max_horizontal(pl.col("trailing_share").fill_null(0),
                                               pl.col("baseline_share").fill_null(0)).alias("share"))


def tool_usage_change(j: pl.DataFrame, missing: pl.DataFrame) -> pl.DataFrame:
    if missing.is_empty():
        return no_anomalies()
    per_session = missing.sort("share", "name", descending=[True, False]).group_by("session_id").agg(
        pl.col("name"), pl.col("share"), pl.col("trailing_share"), pl.col("baseline_share"))
    rows = j.select("session_id", "agent_name", "tool_sequence").join(per_session, on="session_id")

    def judge(r: dict):
        top = r["share"][0]
        severity = "major" if top >= ALWAYS_TOOL else "minor"
        names = ", ".join(f"{n} (called by {pct(s)} of its usual sessions)" for n, s in zip(r["name"], r["share"], strict=True))
        return severity, float(sum(r["share"])), (
            f"{'tool' if len(r['name']) == 1 else 'tools'} {names} no longer called"), {
            "missing_tools": {n: {"trailing_share": ts, "baseline_share": bs, "share": s}
                              for n, s, ts, bs in zip(r["name"], r["share"], r["trailing_share"],
                                                      r["baseline_share"], strict=True)},
            "tool_sequence": r["tool_sequence"].split(",")[:30] if r["tool_sequence"] else []}

    return build(rows, "tool_usage_change", judge)

