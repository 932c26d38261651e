"""The seven failure modes: skill_bloat, context_rot, confident_hallucination,
sequential_tax, cost_creep, cascade_failure, model_change (see the package docstring
for what each needs), and the arbitration that gives an expensive session one cause."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import polars as pl
from scipy.stats import binom

from ml.anomaly.history import HISTORY, MIN_HISTORY, SIGMA_FLOOR
from ml.anomaly.rules import COST_SPIKE_RATIO
from ml.features import IQR_TO_SIGMA, millis, money, parse_iso, pct, times, to_json
from ml.verdicts import anomalies, build, capitalized, no_anomalies

# novelty of tools and models
TOOL_NOVELTY = timedelta(days=2)
MODEL_NOVELTY = timedelta(days=3)
RARE_MODEL = 0.01
# skill_bloat
ERROR_RATE_FLOOR = 0.01
BLOAT_TAIL = 0.01
BLOAT_MAJOR_TAIL = 1e-3
BLOAT_DENSITY = 1.5
RATING_SLACK = 0.5  # a rating within half a point of the failures' mean rating is a failure's rating
RATING_GAP = 2.0  # and the rating is at least this far below the agent's usual rating of a success
# context_rot
CONTEXT_GROWTH = 1.15
# sequential_tax
PARALLEL_AGENT = 1.15
SERIAL_FRACTION = 1 / 3
SEQUENTIAL_MAJOR_SHARE = 0.10
# cost_creep
CREEP_MIN_RECENT = 8
CREEP_MIN_TREND = 20
CREEP_LEVEL = math.log(1.10)
CREEP_LEVEL_Z = 4.0
CREEP_SLOPE = 0.05  # log units per day
CREEP_SLOPE_Z = 3.0
CREEP_MAX_SLOPE = math.log(2.0)  # faster than doubling in a day is a jump, not a creep
CREEP_CONSISTENT = 2.0  # the session is within this many sigmas below the recent level
# A creep is a line through the noise: the 24 h trend's residual variance stays near the
# agent's usual spread of the gap (0.3-1.0x of its square in the simulated creep). A spike or
# a step inside the window leaves far wider residuals (7-10x after a 6x spike), and its
# slope is no creep: ``cost_spike`` (or the regression against the baseline) reports it.
CREEP_FIT = 3.0
# cascade_failure
CASCADE_WINDOW = timedelta(hours=6)
CASCADE_RATE_FLOOR = 0.02
CASCADE_LEVELS = ((1e-6, "critical"), (1e-3, "major"), (0.01, "minor"))
# model_change
OUTPUT_SHIFT = 1.3


def skill_bloat(j: pl.DataFrame, tools: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
    new_trailing = (tools.filter(pl.col("in_session") & pl.col("new"))
                    .group_by("session_id").agg(pl.col("name").sort().alias("new_tools")))
    rows = j.filter(pl.col("tool_call_count") > 0).join(new_trailing, on="session_id", how="left")

    def judge(r: dict):
        unfamiliar = set(r["new_tools"] or [])
        b = baselines.get(r["agent_name"]) if r["b_usable"] else None
        if b and b.get("tool_frequency"):
            unfamiliar |= {t for t in r["tools"] if t not in b["tool_frequency"]}
        if not unfamiliar:
            return None
        p0 = max(r["ref_error_rate"] if r["ref_error_rate"] is not None else ERROR_RATE_FLOOR, ERROR_RATE_FLOOR)
        n, k = r["tool_call_count"], r["tool_error_count"]
        tail = float(binom.sf(k - 1, n, p0)) if k > 0 else 1.0
        density = (r["tools_per_turn"] / r["ref_tpt_med"]) if r["ref_tpt_med"] else None
        dense = density is not None and density >= BLOAT_DENSITY
        if tail >= BLOAT_TAIL and not dense:
            return None
        if tail < BLOAT_TAIL and dense:
            severity = "critical"
        elif tail < BLOAT_MAJOR_TAIL or dense:
            severity = "major"
        else:
            severity = "minor"
        names = sorted(unfamiliar)
        text = (f"called {len(names)} tool(s) new to this agent ({', '.join(names[:4])}"
                f"{'...' if len(names) > 4 else ''}) and tool use degraded: {k} of {n} tool calls failed "
                f"(usual error rate {pct(p0, 1)}")
        text += f", tail probability {tail:.1e})" if k else ")"
        if density is not None:
            text += f", {r['tools_per_turn']:.1f} tool calls per turn vs {r['ref_tpt_med']:.1f} usually"
        return severity, -math.log10(max(tail, 1e-300)) + (density or 0.0), text, {
            "new_tools": names, "tool_calls": n, "tool_errors": k, "usual_error_rate": p0,
            "error_tail_probability": tail, "tools_per_turn": r["tools_per_turn"],
            "usual_tools_per_turn": r["ref_tpt_med"], "density_ratio": density,
            "reference": "baseline" if r["b_usable"] else "trailing"}

    return build(rows, "skill_bloat", judge)


def context_rot(j: pl.DataFrame) -> pl.DataFrame:
    rows = j.filter(pl.col("ref_turn_q99").is_not_null() & pl.col("ref_peak_q99").is_not_null()
                    & (pl.col("turn_count") > pl.col("ref_turn_q99"))
                    & (pl.col("peak_tokens_input") > CONTEXT_GROWTH * pl.col("ref_peak_q99")))

    def judge(r: dict):
        growth = r["peak_tokens_input"] / r["ref_peak_q99"]
        failed = not r["ok"]
        unhappy = (r["user_satisfaction"] is not None and r["ref_sat_ok_med"] is not None
                   and r["user_satisfaction"] < r["ref_sat_ok_med"])
        severity = "major" if failed or unhappy else "minor"
        text = (f"{r['turn_count']} turns (usual 99th percentile {r['ref_turn_q99']:g}) grew the context to "
                f"{r['peak_tokens_input']:,} input tokens, {times(growth)} the usual largest prompt")
        if failed:
            text += f"; the session ended in {r['status']}"
        elif unhappy:
            text += (f"; satisfaction {r['user_satisfaction']:g} is below the usual "
                     f"{r['ref_sat_ok_med']:g} for successes")
        return severity, growth + (1.0 if severity == "major" else 0.0), text, {
            "turn_count": r["turn_count"], "usual_turn_q99": r["ref_turn_q99"],
            "peak_tokens_input": r["peak_tokens_input"], "usual_peak_q99": r["ref_peak_q99"],
            "context_growth": growth, "status": r["status"], "user_satisfaction": r["user_satisfaction"],
            "usual_success_satisfaction": r["ref_sat_ok_med"],
            "reference": "baseline" if r["b_usable"] else "trailing"}

    return build(rows, "context_rot", judge)


def confident_hallucination(j: pl.DataFrame) -> pl.DataFrame:
    rows = j.filter(pl.col("ok") & pl.col("confidence").is_not_null() & pl.col("user_satisfaction").is_not_null()
                    & pl.col("ref_conf_ok_med").is_not_null() & pl.col("ref_sat_fail_mean").is_not_null()
                    & (pl.col("confidence") >= pl.col("ref_conf_ok_med"))
                    & (pl.col("user_satisfaction") <= pl.col("ref_sat_fail_mean") + RATING_SLACK)
                    & (pl.col("user_satisfaction") <= pl.col("ref_sat_ok_med") - RATING_GAP))

    def judge(r: dict):
        top = r["ref_conf_ok_q90"] is not None and r["confidence"] >= r["ref_conf_ok_q90"]
        severity = "major" if top else "minor"
        gap = r["confidence"] - r["ref_conf_ok_med"]
        return severity, gap + (r["ref_sat_fail_mean"] - r["user_satisfaction"] + 1), (
            f"reported success with confidence {r['confidence']:.2f} (usual {r['ref_conf_ok_med']:.2f} for "
            f"successes) but the user rated it {r['user_satisfaction']:g}/5, like this agent's failed sessions "
            f"(rated {r['ref_sat_fail_mean']:.1f} on average; successes {r['ref_sat_ok_med']:g})"), {
            "confidence": r["confidence"], "user_satisfaction": r["user_satisfaction"], "status": r["status"],
            "usual_success_confidence": r["ref_conf_ok_med"], "success_confidence_q90": r["ref_conf_ok_q90"],
            "usual_failure_satisfaction": r["ref_sat_fail_mean"],
            "usual_success_satisfaction": r["ref_sat_ok_med"],
            "reference": "baseline" if r["b_usable"] else "trailing"}

    return build(rows, "confident_hallucination", judge)


def sequential_tax(j: pl.DataFrame, missing: pl.DataFrame) -> pl.DataFrame:
    incomplete = missing.select("session_id").unique()
    threshold = 1 + SERIAL_FRACTION * (pl.col("ref_par_q01") - 1)
    rows = (j.filter(pl.col("parallelism").is_not_null() & (pl.col("ref_par_med") >= PARALLEL_AGENT)
                     & (pl.col("ref_par_q01") > 1.0) & (pl.col("parallelism") <= threshold))
            .join(incomplete, on="session_id", how="anti"))

    def judge(r: dict):
        expected_wall = r["tool_latency_ms"] / r["ref_par_med"]
        extra = max(0.0, r["tool_wall_ms"] - expected_wall)
        share = extra / r["active_ms"] if r["active_ms"] else 0.0
        severity = "major" if share >= SEQUENTIAL_MAJOR_SHARE else "minor"
        return severity, share * 10 + (r["ref_par_med"] - r["parallelism"]), (
            f"ran its {r['tool_call_count']} tool calls one after another (parallelism {r['parallelism']:.2f} vs "
            f"usually {r['ref_par_med']:.2f}): about {millis(extra)} of tool time, {pct(share)} of its active "
            f"time, that overlapping would have saved"), {
            "parallelism": r["parallelism"], "usual_parallelism": r["ref_par_med"],
            "usual_parallelism_q01": r["ref_par_q01"], "tool_latency_ms": r["tool_latency_ms"],
            "tool_wall_ms": r["tool_wall_ms"], "extra_wall_ms": extra, "share_of_active_time": share,
            "reference": "baseline" if r["b_usable"] else "trailing"}

    return build(rows, "sequential_tax", judge)


def arbitrate_cost(j: pl.DataFrame, spikes: pl.DataFrame, creep: pl.DataFrame,
                    rot: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """One cause per expensive session: a grown context (context_rot) explains a costly call,
    and a session near its agent's crept-up recent level is creep, not a spike, unless it is
    far above even that level."""
    far = j.filter(pl.col("r_cost_med").is_null()
                   | (pl.col("log_cost_per_call") - pl.col("r_cost_med") >= math.log(COST_SPIKE_RATIO)))
    creeping = creep.join(far.select("session_id"), on="session_id", how="anti").select("session_id")
    spikes = (spikes.join(rot.select("session_id"), on="session_id", how="anti")
              .join(creeping, on="session_id", how="anti"))
    creep = creep.join(spikes.select("session_id"), on="session_id", how="anti")
    return spikes, creep, rot


def cost_creep(j: pl.DataFrame) -> pl.DataFrame:
    n, st, sx, stt, stx, sxx = (pl.col(c) for c in ("s_n", "s_t", "s_x", "s_tt", "s_tx", "s_xx"))
    var_t = stt - st * st / n
    slope = (stx - st * sx / n) / var_t
    resid = ((sxx - sx * sx / n) - slope * slope * var_t) / (n - 2)
    slope_se = (resid.clip(lower_bound=0) / var_t).sqrt()
    sigma = pl.max_horizontal((pl.col("g_q75") - pl.col("g_q25")) / IQR_TO_SIGMA, pl.lit(SIGMA_FLOOR))
    rows = (j.with_columns(slope.alias("slope"), slope_se.alias("slope_se"), sigma.alias("gap_sigma"),
                           resid.alias("resid"))
            .with_columns((pl.col("r_gap_med") / (1.25 * pl.col("gap_sigma") / pl.col("r_gap_n").sqrt()))
                          .alias("level_z"))
            .filter(pl.col("cost_gap").is_not_null() & (pl.col("g_n") >= MIN_HISTORY)
                    & (pl.col("r_gap_n") >= CREEP_MIN_RECENT) & (pl.col("s_n") >= CREEP_MIN_TREND) & (var_t > 0)
                    & (pl.col("r_gap_med") >= CREEP_LEVEL) & (pl.col("level_z") >= CREEP_LEVEL_Z)
                    & (pl.col("slope") >= CREEP_SLOPE) & (pl.col("slope") >= CREEP_SLOPE_Z * pl.col("slope_se"))
                    & (pl.col("slope") <= CREEP_MAX_SLOPE)
                    & (pl.col("resid") <= CREEP_FIT * pl.col("gap_sigma") ** 2)
                    & (pl.col("cost_gap") >= 0)
                    & (pl.col("cost_gap") >= pl.col("r_gap_med") - CREEP_CONSISTENT * pl.col("gap_sigma"))))

    def judge(r: dict):
        level = math.exp(r["r_gap_med"])
        severity = "critical" if level >= 2.0 else "major" if level >= 1.3 else "minor"
        daily = math.exp(r["slope"]) - 1
        reference = "its baseline" if r["b_usable"] else "its trailing 7 days"
        usual = math.exp(r["ref_strat_med"])
        return severity, r["r_gap_med"] * 10 + r["slope"], (
            f"cost per LLM call has crept up: over the last 6 h this agent's sessions cost {times(level)} what "
            f"sessions of the same length cost in {reference}, and the last 24 h trend is +{pct(daily)}/day; "
            f"this session: {money(r['cost_per_call'])} per call vs {money(usual)} usually for "
            f"{r['llm_call_count']} call(s)"), {
            "cost_per_call": r["cost_per_call"], "usual_cost_per_call_same_length": usual,
            "session_ratio": math.exp(r["cost_gap"]), "recent_level_ratio": level, "level_z": r["level_z"],
            "recent_sessions": int(r["r_gap_n"]), "trend_per_day": daily,
            "trend_z": r["slope"] / r["slope_se"] if r["slope_se"] else None, "trend_sessions": int(r["s_n"]),
            "reference": "baseline" if r["b_usable"] else "trailing"}

    return build(rows, "cost_creep", judge)


def cascade_failure(f: pl.DataFrame, j: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
    children = f.filter(pl.col("parent_session_id").is_not_null())
    if children.is_empty():
        return no_anomalies()
    # The first failed child of each parent is where its cascade started.
    failed_children = (children.filter(~pl.col("ok")).sort("started_at", "session_id")
                       .group_by("parent_session_id", maintain_order=True)
                       .agg(pl.col("started_at").first().alias("cascade_at"),
                            pl.col("agent_name").first().alias("cascade_agent"),
                            pl.col("session_id").first().alias("cascade_child"),
                            pl.col("tool_error_count").first().alias("child_tool_errors"),
                            pl.col("status").first().alias("child_status")))
    has_children = children.select(pl.col("parent_session_id").alias("session_id")).unique()
    parents = (f.join(has_children, on="session_id", how="semi")
               .select("session_id", "agent_name", "started_at", "ok", "status")
               .join(failed_children, left_on="session_id", right_on="parent_session_id", how="left")
               .with_columns((~pl.col("ok") & pl.col("cascade_at").is_not_null()).alias("cascade"))
               .sort("agent_name", "started_at", "session_id"))
    window_us = int(CASCADE_WINDOW.total_seconds() * 1_000_000)
    history_us = int(HISTORY.total_seconds() * 1_000_000)
    stats = []
    for _, g in parents.group_by("agent_name"):
        t = g.get_column("started_at").dt.epoch("us").to_numpy()
        order = np.argsort(t, kind="stable")
        t = t[order]
        cascade = g.get_column("cascade").to_numpy()[order]
        at = g.get_column("cascade_at").dt.epoch("us").fill_null(np.iinfo(np.int64).max).to_numpy()[order]
        via = np.array(g.get_column("cascade_agent").fill_null("").to_list(), dtype=object)[order]
        ids = np.array(g.get_column("session_id").to_list(), dtype=object)[order]
        for i in np.nonzero(cascade)[0]:
            q = t[i]
            lo6, lo7, hi = (np.searchsorted(t, q - window_us, "left"), np.searchsorted(t, q - history_us, "left"),
                            np.searchsorted(t, q, "left"))
            # earlier sessions whose cascade through the same child agent had begun before this one started
            same = cascade & (at < q) & (via == via[i])
            stats.append({"session_id": ids[i], "n6": int(hi - lo6), "k6": int(same[lo6:hi].sum()),
                          "n7": int(hi - lo7), "k7": int(same[lo7:hi].sum())})
    if not stats:
        return no_anomalies()
    table = pl.DataFrame(stats, schema={"session_id": pl.Utf8, "n6": pl.Int64, "k6": pl.Int64, "n7": pl.Int64,
                                        "k7": pl.Int64})
    cascades = parents.join(table, on="session_id")
    judged_ids = set(j.get_column("session_id").to_list())
    out = []
    for r in cascades.iter_rows(named=True):
        if r["session_id"] not in judged_ids and r["cascade_child"] not in judged_ids:
            continue
        child_base = baselines.get(r["cascade_agent"])
        until = parse_iso(child_base.get("last_session_at")) if isinstance(child_base, dict) else None
        if until is not None and until < r["started_at"] and child_base.get("success_rate") is not None:
            rate, source = 1 - float(child_base["success_rate"]), f"{r['cascade_agent']} baseline failure rate"
        elif r["n7"] >= MIN_HISTORY:
            rate, source = r["k7"] / r["n7"], f"trailing rate of cascades through {r['cascade_agent']}"
        else:
            continue
        rate = min(max(rate, CASCADE_RATE_FLOOR), 0.99)
        k, n = r["k6"] + 1, r["n6"] + 1
        tail = float(binom.sf(k - 1, n, rate))
        severity = next((s for limit, s in CASCADE_LEVELS if tail < limit), None)
        if severity is None:
            continue
        score = round(-math.log10(max(tail, 1e-300)), 4)
        details = {"usual_rate": rate, "usual_rate_source": source, "recent_cascades": k, "recent_sessions": n,
                   "tail_probability": tail, "status": r["status"], "failed_child_agent": r["cascade_agent"],
                   "failed_child_session": r["cascade_child"], "failed_child_status": r["child_status"],
                   "child_tool_errors": r["child_tool_errors"], "parent_session_id": None}
        rate_text = (f"{k} of {{whose}} {n} sessions in the last 6 h failed after {r['cascade_agent']} did, vs "
                     f"{pct(rate)} usually (tail probability {tail:.1e})")
        if r["session_id"] in judged_ids:
            text = (f"failed after its child {r['cascade_agent']} failed ({r['child_status']}, "
                    f"{r['child_tool_errors']} tool error(s)); " + rate_text.format(whose="this agent's"))
            out.append({"session_id": r["session_id"], "agent_name": r["agent_name"],
                        "anomaly_type": "cascade_failure", "severity": severity, "score": score,
                        "explanation": capitalized(text), "details": to_json(details)})
        if r["cascade_child"] in judged_ids:
            text = (f"this {r['cascade_agent']} failure propagated to its parent {r['agent_name']} "
                    f"({r['session_id']}), which failed too; " + rate_text.format(whose=f"{r['agent_name']}'s"))
            out.append({"session_id": r["cascade_child"], "agent_name": r["cascade_agent"],
                        "anomaly_type": "cascade_failure", "severity": severity, "score": score,
                        "explanation": capitalized(text),
                        "details": to_json({**details, "parent_session_id": r["session_id"],
                                            "parent_agent": r["agent_name"]})})
    if not out:
        return no_anomalies()
    return (anomalies(out)
            .sort("score", "session_id", "agent_name", descending=[True, False, False], maintain_order=True)
            .unique(["session_id"], keep="first", maintain_order=True))


def model_change(j: pl.DataFrame, models: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
    new_trailing = (models.filter(pl.col("in_session") & pl.col("new"))
                    .group_by("session_id").agg(pl.col("name").sort().alias("new_models")))
    rows = j.filter(pl.col("llm_call_count") > 0).join(new_trailing, on="session_id", how="left")

    def judge(r: dict):
        new = set(r["new_models"] or [])
        b = baselines.get(r["agent_name"]) if r["b_usable"] else None
        usual: list[str] = []
        if b and b.get("models"):
            shares = b["models"]
            new |= {m for m in r["model_list"] if shares.get(m, 0.0) < RARE_MODEL}
            usual = sorted(shares, key=lambda m: (-shares[m], m))[:2]
        if not new:
            return None
        shifts = []
        if r["log_output_per_call"] is not None and r["ref_out_med"] is not None:
            ratio = math.exp(r["log_output_per_call"] - r["ref_out_med"])
            if ratio >= OUTPUT_SHIFT or ratio <= 1 / OUTPUT_SHIFT:
                shifts.append(f"{times(ratio)} the usual output tokens per call")
        if not r["ok"] and r["ref_ok_rate"] is not None and r["ref_ok_rate"] >= 0.8:
            shifts.append(f"ended in {r['status']} where {pct(r['ref_ok_rate'])} usually succeed")
        if r["ref_turn_q99"] is not None and r["turn_count"] > r["ref_turn_q99"]:
            shifts.append(f"{r['turn_count']} turns, above the usual 99th percentile ({r['ref_turn_q99']:g})")
        severity = "major" if shifts else "minor"
        text = f"answered by {', '.join(sorted(new))}, new to this agent"
        if usual:
            text += f" (baseline: {', '.join(usual)})"
        if shifts:
            text += "; behaviour shifted: " + "; ".join(shifts)
        return severity, len(new) + len(shifts), text, {
            "new_models": sorted(new), "models": r["model_list"], "providers": r["providers"],
            "baseline_models": usual, "behaviour_shifts": shifts,
            "reference": "baseline" if r["b_usable"] else "trailing"}

    return build(rows, "model_change", judge)
