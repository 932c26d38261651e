"""Anomalies: each session of a day against its own agent's history (and baseline).

Every threshold is relative to the agent itself. "History" is the agent's sessions
that started in the 7 days strictly before the judged one (polars rolling windows
closed on the left, or sorted-array counts), so a verdict never depends on later
sessions or on the clock, and re-running a day gives the same verdicts. Where a
fault persists for days it soon dominates the trailing history and would pass for
normal, so the persistent failure modes compare with the agent's baseline when one
is given whose sessions all precede the judged one, and with the trailing history
otherwise. Costs and latencies are judged per LLM call (see ``ml.features``) as
logs, with robust statistics: median, and sigma = interquartile range / 1.349.

One cause per expensive session: a session whose context grew (``context_rot``)
is not also a ``cost_spike``, and one that sits at its agent's crept-up recent
level is ``cost_creep``, not a spike, unless it is 1.5x above even that level.

Rules of the seed, made robust:

* ``cost_spike``: cost per LLM call above the trailing 7-day centre + 3 sigma and
  at least 1.5x it. Major from 2x and 4.5 sigma, critical from 3x and 6 sigma
  (a healthy agent's cost per call stays within ~1.5x of its median).
* ``latency_spike``: active time (LLM + tool wall time, not the user's think time
  between turns) per LLM call above 2x the trailing 7-day mean and 3.5 sigma; or
  1.75x while the agent's sessions of the 2 h before (at least 5) ran at >= 1.75x
  too. One slow call is within a healthy agent's noise (LLM latency has a long
  lognormal tail), so major needs that sustained slowness or 5 sigma, and critical
  needs it at >= 2x while this session is >= 2.5x.
* ``tool_usage_change``: a tool that >= 80% of the trailing sessions (or of the
  baseline) called was not called. Major when it was called >= 95% of the time.

Failure modes:

* ``skill_bloat``: the session calls tools that are new to the agent (absent from
  the baseline, or first used less than 2 days ago after days without them) *and*
  tool use degrades: its tool errors are improbable at the agent's usual error
  rate (binomial tail < 1%) or it makes >= 1.5x the usual tool calls per turn.
  Major with a tail < 1e-3 or the extra calls; critical with both symptoms.
* ``context_rot``: more turns than the agent's 99th percentile *and* a largest
  prompt (context) > 1.15x its 99th percentile; major when quality fell too
  (failed, or satisfaction below the usual for successes).
* ``confident_hallucination``: reported success with confidence at or above the
  agent's median for successes, while the user rated it like a failed session
  (within half a point of the failures' mean rating, from at least 10 rated) and
  at least 2 points below the agent's median rating of a success. Major when the
  confidence is in the top decile of the agent's successes.
* ``sequential_tax``: an agent that overlaps its tools (median parallelism >=
  1.15) ran them one after another: parallelism below a third of the way from 1 to
  its 1st percentile, with its usual tool set (a dropped tool is
  ``tool_usage_change``). Major when the lost overlap is >= 10% of the session's
  active time.
* ``cost_creep``: a slow rise, judged on the agent's level rather than one session.
  Each session's cost per call is compared with sessions of the same number of
  LLM calls (baseline, else trailing 7 days), as later calls carry more context;
  the median of that gap over the last 6 h must be >= +10% at 4 standard errors,
  and its least-squares trend over 24 h rising by >= 5%/day at 3 standard errors
  but slower than doubling a day (a jump is a spike or a step, not a creep). The
  session itself costs at least its reference and is near the recent level.
  Major at +30%, critical when the level has doubled.
* ``cascade_failure``: the session failed after one of its child sessions failed,
  and cascades through that child agent are improbable at their usual rate (the
  child agent's baseline failure rate, else the trailing rate of such cascades)
  given how many of the agent's sessions of the 6 h before cascaded through it,
  plus this one: binomial tail < 1% (minor), < 1e-3 (major), < 1e-6 (critical).
  The failed child gets the same verdict: its failure is what propagated. The
  only verdict that looks at sessions started after the judged one: its own
  children (and, for a child, its parent, which started before it).
* ``model_change``: a model answered that the baseline never used, or that the
  agent first used less than 3 days ago after days without it. Major when the
  session also behaves differently: output tokens per call >= 1.3x (or <= 0.77x)
  the usual, a failure where the agent usually succeeds, or more turns than usual.

The IsolationForest (``ml.forest``) is trained and scored separately, per agent.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Callable

import numpy as np
import polars as pl
from scipy.stats import binom

from ml.features import IQR_TO_SIGMA, derive, micros, millis, money, parse_iso, pct, times, to_json

HISTORY = timedelta(days=7)
TRAILING = "7d"
MIN_HISTORY = 20  # sessions in the trailing window before a history-relative verdict
SIGMA_FLOOR = 0.05
TYPES = ("cost_spike", "latency_spike", "tool_usage_change", "skill_bloat", "context_rot",
         "confident_hallucination", "sequential_tax", "cost_creep", "cascade_failure", "model_change")

VERDICT_SCHEMA = {"session_id": pl.Utf8, "agent_name": pl.Utf8, "anomaly_type": pl.Utf8, "severity": pl.Utf8,
                  "score": pl.Float64, "explanation": pl.Utf8, "details": pl.Utf8}

# cost_spike / latency_spike
SPIKE_SIGMAS = 3.0
LATENCY_SIGMAS = 3.5
COST_SPIKE_RATIO = 1.5
COST_LEVELS = ((3.0, 6.0, "critical"), (2.0, 4.5, "major"))
LATENCY_MEAN_RATIO = 2.0
LATENCY_RECENT = "2h"
LATENCY_RECENT_MIN = 5
LATENCY_SUSTAINED = 1.75  # session and recent median both this far above the median
LATENCY_MAJOR_SIGMAS = 5.0
# tool_usage_change
COMMON_TOOL = 0.8
ALWAYS_TOOL = 0.95
# novelty of tools and models
TOOL_NOVELTY = timedelta(days=2)
MODEL_NOVELTY = timedelta(days=3)
NOVELTY_PRIOR = timedelta(days=3)  # the agent must have this much history before a name counts as new
RARE_MODEL = 0.01
# skill_bloat
ERROR_RATE_FLOOR = 0.01
BLOAT_TAIL = 0.01
BLOAT_MAJOR_TAIL = 1e-3
BLOAT_DENSITY = 1.5
MIN_FAILURES = 10  # rated failed sessions needed to know how failures are rated
RATING_SLACK = 0.5  # a rating within half a point of the failures' mean rating is a failure's rating
RATING_GAP = 2.0  # and the rating is at least this far below the agent's usual rating of a success
# context_rot
CONTEXT_GROWTH = 1.15
# sequential_tax
PARALLEL_AGENT = 1.15
SERIAL_FRACTION = 1 / 3
SEQUENTIAL_MAJOR_SHARE = 0.10
# cost_creep
MIN_STRATUM = 5  # trailing sessions of one length needed for its cost-per-call median
CREEP_RECENT = "6h"
CREEP_TREND = "24h"
CREEP_MIN_RECENT = 8
CREEP_MIN_TREND = 20
CREEP_LEVEL = math.log(1.10)
CREEP_LEVEL_Z = 4.0
CREEP_SLOPE = 0.05  # log units per day
CREEP_SLOPE_Z = 3.0
CREEP_MAX_SLOPE = math.log(2.0)  # faster than doubling in a day is a jump, not a creep
CREEP_CONSISTENT = 2.0  # the session is within this many sigmas below the recent level
# cascade_failure
CASCADE_WINDOW = timedelta(hours=6)
CASCADE_RATE_FLOOR = 0.02
CASCADE_LEVELS = ((1e-6, "critical"), (1e-3, "major"), (0.01, "minor"))
# model_change
OUTPUT_SHIFT = 1.3


def detect(frame: pl.DataFrame, *, day_start: datetime, day_end: datetime,
           baselines: dict[str, dict]) -> pl.DataFrame:
    """Verdicts for the sessions of ``frame`` with day_start <= started_at < day_end."""
    f = derive(frame).sort("agent_name", "started_at", "session_id")
    if f.is_empty():
        return pl.DataFrame(schema=VERDICT_SCHEMA)
    origin = micros(day_start)
    f = f.with_columns(
        ((pl.col("started_at").dt.epoch("us") - origin) / 86_400_000_000).alias("t_days"),
        ((pl.col("started_at") >= day_start) & (pl.col("started_at") < day_end)).alias("judged"),
    )
    f = _trailing(f)
    f = _attach_baselines(f, baselines or {})
    f = _creep_inputs(f, baselines or {})
    judged = f.filter(pl.col("judged"))
    if judged.is_empty():
        return pl.DataFrame(schema=VERDICT_SCHEMA)
    items = _ItemHistory(f, judged)
    tools = items.table("tools", novelty=TOOL_NOVELTY)
    models = items.table("model_list", novelty=MODEL_NOVELTY)
    missing = _missing_tools(judged, tools, baselines or {})
    spikes, creep, rot = _arbitrate_cost(judged, _cost_spike(judged), _cost_creep(judged), _context_rot(judged))
    parts = [
        spikes,
        _latency_spike(judged),
        _tool_usage_change(judged, missing),
        _skill_bloat(judged, tools, baselines or {}),
        rot,
        _confident_hallucination(judged),
        _sequential_tax(judged, missing),
        creep,
        _cascade_failure(f, judged, baselines or {}),
        _model_change(judged, models, baselines or {}),
    ]
    found = [p for p in parts if p is not None and not p.is_empty()]
    if not found:
        return pl.DataFrame(schema=VERDICT_SCHEMA)
    return pl.concat(found, how="vertical").sort("anomaly_type", "session_id")


# ------------------------------------------------------------------ references


def _roll(expr: pl.Expr, how: str, window: str = TRAILING, quantile: float | None = None) -> pl.Expr:
    by = "started_at"
    if how == "quantile":
        out = expr.rolling_quantile_by(by, window_size=window, quantile=quantile, closed="left",
                                       interpolation="linear")
    elif how == "mean":
        out = expr.rolling_mean_by(by, window_size=window, closed="left")
    elif how == "std":
        out = expr.rolling_std_by(by, window_size=window, closed="left")
    elif how == "sum":
        out = expr.rolling_sum_by(by, window_size=window, closed="left")
    elif how == "max":
        out = expr.rolling_max_by(by, window_size=window, closed="left")
    else:
        raise ValueError(how)
    return out.over("agent_name")


def _count(expr: pl.Expr, window: str = TRAILING) -> pl.Expr:
    return _roll(expr.is_not_null().cast(pl.Float64), "sum", window)


def _trailing(f: pl.DataFrame) -> pl.DataFrame:
    """Per-row statistics of the agent's sessions that started in the window before the row."""
    cost, lat = pl.col("log_cost_per_call"), pl.col("log_latency_per_call")
    ok = pl.col("ok")
    conf_ok = pl.when(ok).then(pl.col("confidence"))
    sat_ok = pl.when(ok).then(pl.col("user_satisfaction"))
    sat_fail = pl.when(~ok).then(pl.col("user_satisfaction"))
    return f.with_columns(
        _roll(pl.col("started_at").is_not_null().cast(pl.Float64), "sum").alias("h_n"),
        _count(cost).alias("h_cost_n"),
        _roll(cost, "quantile", quantile=0.5).alias("h_cost_med"),
        _roll(cost, "quantile", quantile=0.25).alias("h_cost_q25"),
        _roll(cost, "quantile", quantile=0.75).alias("h_cost_q75"),
        _roll(pl.col("cost_per_call"), "mean").alias("h_cpc_mean"),
        _roll(pl.col("cost_per_call"), "std").alias("h_cpc_std"),
        _count(lat).alias("h_lat_n"),
        _roll(lat, "quantile", quantile=0.5).alias("h_lat_med"),
        _roll(lat, "quantile", quantile=0.25).alias("h_lat_q25"),
        _roll(lat, "quantile", quantile=0.75).alias("h_lat_q75"),
        _roll(pl.col("latency_per_call"), "mean").alias("h_lpc_mean"),
        _roll(lat, "quantile", LATENCY_RECENT, quantile=0.5).alias("r_lat_med"),
        _count(lat, LATENCY_RECENT).alias("r_lat_n"),
        _roll(pl.col("log_output_per_call"), "quantile", quantile=0.5).alias("h_out_med"),
        _roll(conf_ok, "quantile", quantile=0.5).alias("h_conf_ok_med"),
        _roll(conf_ok, "quantile", quantile=0.9).alias("h_conf_ok_q90"),
        _roll(sat_ok, "quantile", quantile=0.5).alias("h_sat_ok_med"),
        _roll(sat_fail, "mean").alias("h_sat_fail_mean"),
        _count(sat_fail).alias("h_sat_fail_n"),
        _roll(pl.col("turn_count").cast(pl.Float64), "quantile", quantile=0.99).alias("h_turn_q99"),
        _roll(pl.col("peak_tokens_input").cast(pl.Float64), "quantile", quantile=0.99).alias("h_peak_q99"),
        _roll(pl.col("parallelism"), "quantile", quantile=0.5).alias("h_par_med"),
        _roll(pl.col("parallelism"), "quantile", quantile=0.01).alias("h_par_q01"),
        _count(pl.col("parallelism")).alias("h_par_n"),
        _roll(pl.col("tools_per_turn"), "quantile", quantile=0.5).alias("h_tpt_med"),
        _roll(pl.col("tool_call_count").cast(pl.Float64), "sum").alias("h_tool_calls"),
        _roll(pl.col("tool_error_count").cast(pl.Float64), "sum").alias("h_tool_errors"),
        _roll(ok.cast(pl.Float64), "mean").alias("h_ok_rate"),
        _roll(cost, "quantile", CREEP_RECENT, quantile=0.5).alias("r_cost_med"),
        _count(cost, CREEP_RECENT).alias("r_cost_n"),
    )


_BASELINE_COLUMNS = {
    "b_cost_med": ("metrics", "log_cost_per_call", "median"),
    "b_cost_sigma": ("metrics", "log_cost_per_call", "sigma"),
    "b_out_med": ("metrics", "log_output_per_call", "median"),
    "b_turn_q99": ("metrics", "turn_count", "q99"),
    "b_peak_q99": ("metrics", "peak_tokens_input", "q99"),
    "b_par_med": ("metrics", "parallelism", "median"),
    "b_par_q01": ("metrics", "parallelism", "q01"),
    "b_tpt_med": ("metrics", "tools_per_turn", "median"),
    "b_conf_ok_med": ("success_confidence", "median"),
    "b_conf_ok_q90": ("success_confidence", "q90"),
    "b_sat_ok_med": ("success_satisfaction", "median"),
    "b_sat_fail_mean": ("failure_satisfaction", "mean"),
    "b_sat_fail_n": ("failure_satisfaction", "count"),
    "b_tool_error_rate": ("tool_error_rate",),
    "b_ok_rate": ("success_rate",),
}


def _dig(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _attach_baselines(f: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
    """b_* columns from each agent's baseline, null where it is missing or its sessions do not
    all precede the row; ref_* = baseline where usable, else the trailing figure."""
    rows = []
    for agent, b in baselines.items():
        until = parse_iso(b.get("last_session_at")) if isinstance(b, dict) else None
        if until is None:
            continue
        row: dict[str, Any] = {"agent_name": agent, "b_until": until}
        for name, path in _BASELINE_COLUMNS.items():
            value = _dig(b, path)
            row[name] = float(value) if isinstance(value, (int, float)) else None
        rows.append(row)
    schema = {"agent_name": pl.Utf8, "b_until": pl.Datetime("us", "UTC"),
              **{name: pl.Float64 for name in _BASELINE_COLUMNS}}
    table = pl.DataFrame(rows, schema=schema, orient="row")
    f = f.join(table, on="agent_name", how="left")
    usable = pl.col("b_until").is_not_null() & (pl.col("b_until") < pl.col("started_at"))
    f = f.with_columns(usable.alias("b_usable"),
                       *[pl.when(usable).then(pl.col(name)).alias(name) for name in _BASELINE_COLUMNS])
    pairs = {"cost_med": "cost_med", "out_med": "out_med", "turn_q99": "turn_q99", "peak_q99": "peak_q99",
             "par_med": "par_med", "par_q01": "par_q01", "tpt_med": "tpt_med", "conf_ok_med": "conf_ok_med",
             "conf_ok_q90": "conf_ok_q90", "sat_ok_med": "sat_ok_med"}
    trailing_sigma = ((pl.col("h_cost_q75") - pl.col("h_cost_q25")) / IQR_TO_SIGMA)
    enough = pl.col("h_n") >= MIN_HISTORY
    return f.with_columns(
        *[pl.coalesce(pl.col(f"b_{b}"), pl.when(enough).then(pl.col(f"h_{h}"))).alias(f"ref_{b}")
          for b, h in pairs.items()],
        pl.coalesce(pl.col("b_cost_sigma"), pl.when(enough).then(trailing_sigma)).alias("ref_cost_sigma"),
        pl.coalesce(pl.col("b_tool_error_rate"),
                    pl.when(enough & (pl.col("h_tool_calls") > 0))
                    .then(pl.col("h_tool_errors") / pl.col("h_tool_calls"))).alias("ref_error_rate"),
        pl.coalesce(pl.col("b_ok_rate"), pl.when(enough).then(pl.col("h_ok_rate"))).alias("ref_ok_rate"),
        pl.coalesce(pl.when(pl.col("b_sat_fail_n") >= MIN_FAILURES).then(pl.col("b_sat_fail_mean")),
                    pl.when(pl.col("h_sat_fail_n") >= MIN_FAILURES).then(pl.col("h_sat_fail_mean")))
        .alias("ref_sat_fail_mean"),
    )


def _creep_inputs(f: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
    """``cost_gap``: log cost per call minus the reference median of sessions with as many
    LLM calls (baseline where usable, else the trailing 7 days of that length), then its
    robust spread, its median over the last 6 h and its least-squares trend over 24 h."""
    rows = [{"agent_name": agent, "calls_bucket": int(bucket), "b_strat_med": float(v["median"])}
            for agent, b in baselines.items() if isinstance(b, dict)
            for bucket, v in (b.get("log_cost_per_call_by_calls") or {}).items()
            if isinstance(v, dict) and v.get("median") is not None]
    table = pl.DataFrame(rows, schema={"agent_name": pl.Utf8, "calls_bucket": pl.Int64, "b_strat_med": pl.Float64})
    cost = pl.col("log_cost_per_call")
    f = (f.with_columns(
            cost.rolling_quantile_by("started_at", window_size=TRAILING, quantile=0.5, closed="left",
                                     interpolation="linear").over(["agent_name", "calls_bucket"]).alias("h_strat_med"),
            cost.is_not_null().cast(pl.Float64).rolling_sum_by("started_at", window_size=TRAILING, closed="left")
            .over(["agent_name", "calls_bucket"]).alias("h_strat_n"))
         .join(table, on=["agent_name", "calls_bucket"], how="left")
         .with_columns(pl.coalesce(pl.when(pl.col("b_usable")).then(pl.col("b_strat_med")),
                                   pl.when(pl.col("h_strat_n") >= MIN_STRATUM).then(pl.col("h_strat_med")))
                       .alias("ref_strat_med"))
         .with_columns((cost - pl.col("ref_strat_med")).alias("cost_gap")))
    t = pl.col("t_days")
    x = pl.col("cost_gap")
    tx = pl.when(x.is_not_null()).then(t)
    return f.with_columns(
        _roll(x, "quantile", quantile=0.25).alias("g_q25"),
        _roll(x, "quantile", quantile=0.75).alias("g_q75"),
        _count(x).alias("g_n"),
        _roll(x, "quantile", CREEP_RECENT, quantile=0.5).alias("r_gap_med"),
        _count(x, CREEP_RECENT).alias("r_gap_n"),
        _count(x, CREEP_TREND).alias("s_n"),
        _roll(tx, "sum", CREEP_TREND).alias("s_t"),
        _roll(x, "sum", CREEP_TREND).alias("s_x"),
        _roll(tx * tx, "sum", CREEP_TREND).alias("s_tt"),
        _roll(tx * x, "sum", CREEP_TREND).alias("s_tx"),
        _roll(x * x, "sum", CREEP_TREND).alias("s_xx"),
    )


class _ItemHistory:
    """When each agent used each tool (or model) name, as sorted arrays of start times, to
    count uses in a window before any session without looking at later sessions."""

    def __init__(self, f: pl.DataFrame, judged: pl.DataFrame) -> None:
        self.f = f
        self.judged = judged
        self.window = int(HISTORY.total_seconds() * 1_000_000)
        self.agent_times = {
            agent: group.get_column("t").to_numpy()
            for (agent,), group in f.select("agent_name", pl.col("started_at").dt.epoch("us").alias("t"))
            .group_by("agent_name")
        }

    def table(self, column: str, novelty: timedelta) -> pl.DataFrame:
        """Per judged session and per name its agent used in the window or the session uses:
        share of the window's sessions that used it, whether it is new, and whether the
        session used it."""
        novelty_us = int(novelty.total_seconds() * 1_000_000)
        prior_us = int(NOVELTY_PRIOR.total_seconds() * 1_000_000)
        long = (self.f.select("agent_name", pl.col("started_at").dt.epoch("us").alias("t"), column)
                .explode(column).drop_nulls(column).unique().sort("agent_name", column, "t"))
        out = []
        for agent, judged in self.judged.group_by("agent_name"):
            agent = agent[0]
            times = np.sort(self.agent_times[agent])
            q = judged.get_column("started_at").dt.epoch("us").to_numpy()
            sids = judged.get_column("session_id").to_list()
            used = judged.get_column(column).to_list()
            lo = np.searchsorted(times, q - self.window, "left")
            hi = np.searchsorted(times, q, "left")
            n_hist = hi - lo
            # sessions old enough that a name absent from them is really new
            n_prior = np.searchsorted(times, q - novelty_us, "left") - lo
            old_enough = (times[np.minimum(lo, len(times) - 1)] <= q - prior_us) if len(times) else q < 0
            names = long.filter(pl.col("agent_name") == agent)
            for (name,), g in names.group_by(column):
                t_name = g.get_column("t").to_numpy()
                a = np.searchsorted(t_name, q - self.window, "left")
                b = np.searchsorted(t_name, q, "left")
                count = b - a
                in_session = np.array([name in u for u in used])
                keep = (count > 0) | in_session
                if not keep.any():
                    continue
                earliest = np.where(count > 0, t_name[np.minimum(a, len(t_name) - 1)], np.iinfo(np.int64).max)
                new = (earliest >= q - novelty_us) & (n_prior >= MIN_HISTORY) & old_enough
                share = np.where(n_hist > 0, count / np.maximum(n_hist, 1), np.nan)
                idx = np.nonzero(keep)[0]
                out.append(pl.DataFrame({
                    "session_id": [sids[i] for i in idx],
                    "name": [name] * len(idx),
                    "share": share[idx],
                    "history": n_hist[idx].astype(np.int64),
                    "new": new[idx],
                    "in_session": in_session[idx],
                }))
        schema = {"session_id": pl.Utf8, "name": pl.Utf8, "share": pl.Float64, "history": pl.Int64,
                  "new": pl.Boolean, "in_session": pl.Boolean}
        if not out:
            return pl.DataFrame(schema=schema)
        return pl.concat([o.cast(schema) for o in out], how="vertical")


# ------------------------------------------------------------------ verdict building


def _verdicts(rows: pl.DataFrame, anomaly_type: str,
              build: Callable[[dict], tuple[str, float, str, dict] | None]) -> pl.DataFrame:
    """Rows -> verdict frame; ``build(row)`` gives (severity, score, explanation, details) or None."""
    out = []
    for row in rows.iter_rows(named=True):
        made = build(row)
        if made is None:
            continue
        severity, score, explanation, details = made
        out.append({"session_id": row["session_id"], "agent_name": row["agent_name"], "anomaly_type": anomaly_type,
                    "severity": severity, "score": float(round(score, 4)),
                    "explanation": explanation[:1].upper() + explanation[1:], "details": to_json(details)})
    return pl.DataFrame(out, schema=VERDICT_SCHEMA, orient="row") if out else pl.DataFrame(schema=VERDICT_SCHEMA)


def _sigma(q25: float | None, q75: float | None) -> float:
    if q25 is None or q75 is None:
        return SIGMA_FLOOR
    return max((q75 - q25) / IQR_TO_SIGMA, SIGMA_FLOOR)


# ------------------------------------------------------------------ rules


def _cost_spike(j: pl.DataFrame) -> pl.DataFrame:
    rows = j.filter((pl.col("h_cost_n") >= MIN_HISTORY) & pl.col("log_cost_per_call").is_not_null()
                    & (pl.col("log_cost_per_call") - pl.col("h_cost_med") >= math.log(COST_SPIKE_RATIO)))

    def build(r: dict):
        sigma = _sigma(r["h_cost_q25"], r["h_cost_q75"])
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

    return _verdicts(rows, "cost_spike", build)


def _latency_spike(j: pl.DataFrame) -> pl.DataFrame:
    recent = pl.when(pl.col("r_lat_n") >= LATENCY_RECENT_MIN).then((pl.col("r_lat_med") - pl.col("h_lat_med")).exp())
    gap = pl.col("log_latency_per_call") - pl.col("h_lat_med")
    rows = (j.filter((pl.col("h_lat_n") >= MIN_HISTORY) & pl.col("latency_per_call").is_not_null())
            .with_columns(recent.alias("recent_ratio"), gap.exp().alias("ratio"))
            .filter(((pl.col("latency_per_call") >= LATENCY_MEAN_RATIO * pl.col("h_lpc_mean"))
                     | ((pl.col("ratio") >= LATENCY_SUSTAINED) & (pl.col("recent_ratio") >= LATENCY_SUSTAINED)))))

    def build(r: dict):
        sigma = _sigma(r["h_lat_q25"], r["h_lat_q75"])
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

    return _verdicts(rows, "latency_spike", build)


def _missing_tools(j: pl.DataFrame, tools: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
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


def _tool_usage_change(j: pl.DataFrame, missing: pl.DataFrame) -> pl.DataFrame:
    if missing.is_empty():
        return pl.DataFrame(schema=VERDICT_SCHEMA)
    per_session = missing.sort("share", "name", descending=[True, False]).group_by("session_id").agg(
        pl.col("name"), pl.col("share"), pl.col("trailing_share"), pl.col("baseline_share"))
    rows = j.select("session_id", "agent_name", "tool_sequence").join(per_session, on="session_id")

    def build(r: dict):
        top = r["share"][0]
        severity = "major" if top >= ALWAYS_TOOL else "minor"
        names = ", ".join(f"{n} (called by {pct(s)} of its usual sessions)" for n, s in zip(r["name"], r["share"], strict=True))
        return severity, float(sum(r["share"])), (
            f"{'tool' if len(r['name']) == 1 else 'tools'} {names} no longer called"), {
            "missing_tools": {n: {"trailing_share": ts, "baseline_share": bs, "share": s}
                              for n, s, ts, bs in zip(r["name"], r["share"], r["trailing_share"],
                                                      r["baseline_share"], strict=True)},
            "tool_sequence": r["tool_sequence"].split(",")[:30] if r["tool_sequence"] else []}

    return _verdicts(rows, "tool_usage_change", build)


# ------------------------------------------------------------------ failure modes


def _skill_bloat(j: pl.DataFrame, tools: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
    new_trailing = (tools.filter(pl.col("in_session") & pl.col("new"))
                    .group_by("session_id").agg(pl.col("name").sort().alias("new_tools")))
    rows = j.filter(pl.col("tool_call_count") > 0).join(new_trailing, on="session_id", how="left")

    def build(r: dict):
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

    return _verdicts(rows, "skill_bloat", build)


def _context_rot(j: pl.DataFrame) -> pl.DataFrame:
    rows = j.filter(pl.col("ref_turn_q99").is_not_null() & pl.col("ref_peak_q99").is_not_null()
                    & (pl.col("turn_count") > pl.col("ref_turn_q99"))
                    & (pl.col("peak_tokens_input") > CONTEXT_GROWTH * pl.col("ref_peak_q99")))

    def build(r: dict):
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

    return _verdicts(rows, "context_rot", build)


def _confident_hallucination(j: pl.DataFrame) -> pl.DataFrame:
    rows = j.filter(pl.col("ok") & pl.col("confidence").is_not_null() & pl.col("user_satisfaction").is_not_null()
                    & pl.col("ref_conf_ok_med").is_not_null() & pl.col("ref_sat_fail_mean").is_not_null()
                    & (pl.col("confidence") >= pl.col("ref_conf_ok_med"))
                    & (pl.col("user_satisfaction") <= pl.col("ref_sat_fail_mean") + RATING_SLACK)
                    & (pl.col("user_satisfaction") <= pl.col("ref_sat_ok_med") - RATING_GAP))

    def build(r: dict):
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

    return _verdicts(rows, "confident_hallucination", build)


def _sequential_tax(j: pl.DataFrame, missing: pl.DataFrame) -> pl.DataFrame:
    incomplete = missing.select("session_id").unique()
    threshold = 1 + SERIAL_FRACTION * (pl.col("ref_par_q01") - 1)
    rows = (j.filter(pl.col("parallelism").is_not_null() & (pl.col("ref_par_med") >= PARALLEL_AGENT)
                     & (pl.col("ref_par_q01") > 1.0) & (pl.col("parallelism") <= threshold))
            .join(incomplete, on="session_id", how="anti"))

    def build(r: dict):
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

    return _verdicts(rows, "sequential_tax", build)


def _arbitrate_cost(j: pl.DataFrame, spikes: pl.DataFrame, creep: pl.DataFrame,
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


def _cost_creep(j: pl.DataFrame) -> pl.DataFrame:
    n, st, sx, stt, stx, sxx = (pl.col(c) for c in ("s_n", "s_t", "s_x", "s_tt", "s_tx", "s_xx"))
    var_t = stt - st * st / n
    slope = (stx - st * sx / n) / var_t
    resid = ((sxx - sx * sx / n) - slope * slope * var_t) / (n - 2)
    slope_se = (resid.clip(lower_bound=0) / var_t).sqrt()
    sigma = pl.max_horizontal((pl.col("g_q75") - pl.col("g_q25")) / IQR_TO_SIGMA, pl.lit(SIGMA_FLOOR))
    rows = (j.with_columns(slope.alias("slope"), slope_se.alias("slope_se"), sigma.alias("gap_sigma"))
            .with_columns((pl.col("r_gap_med") / (1.25 * pl.col("gap_sigma") / pl.col("r_gap_n").sqrt()))
                          .alias("level_z"))
            .filter(pl.col("cost_gap").is_not_null() & (pl.col("g_n") >= MIN_HISTORY)
                    & (pl.col("r_gap_n") >= CREEP_MIN_RECENT) & (pl.col("s_n") >= CREEP_MIN_TREND) & (var_t > 0)
                    & (pl.col("r_gap_med") >= CREEP_LEVEL) & (pl.col("level_z") >= CREEP_LEVEL_Z)
                    & (pl.col("slope") >= CREEP_SLOPE) & (pl.col("slope") >= CREEP_SLOPE_Z * pl.col("slope_se"))
                    & (pl.col("slope") <= CREEP_MAX_SLOPE)
                    & (pl.col("cost_gap") >= 0)
                    & (pl.col("cost_gap") >= pl.col("r_gap_med") - CREEP_CONSISTENT * pl.col("gap_sigma"))))

    def build(r: dict):
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

    return _verdicts(rows, "cost_creep", build)


def _cascade_failure(f: pl.DataFrame, j: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
    children = f.filter(pl.col("parent_session_id").is_not_null())
    if children.is_empty():
        return pl.DataFrame(schema=VERDICT_SCHEMA)
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
        return pl.DataFrame(schema=VERDICT_SCHEMA)
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
                        "explanation": text[:1].upper() + text[1:], "details": to_json(details)})
        if r["cascade_child"] in judged_ids:
            text = (f"this {r['cascade_agent']} failure propagated to its parent {r['agent_name']} "
                    f"({r['session_id']}), which failed too; " + rate_text.format(whose=f"{r['agent_name']}'s"))
            out.append({"session_id": r["cascade_child"], "agent_name": r["cascade_agent"],
                        "anomaly_type": "cascade_failure", "severity": severity, "score": score,
                        "explanation": text[:1].upper() + text[1:],
                        "details": to_json({**details, "parent_session_id": r["session_id"],
                                            "parent_agent": r["agent_name"]})})
    if not out:
        return pl.DataFrame(schema=VERDICT_SCHEMA)
    return (pl.DataFrame(out, schema=VERDICT_SCHEMA, orient="row")
            .sort("score", "session_id", "agent_name", descending=[True, False, False], maintain_order=True)
            .unique(["session_id"], keep="first", maintain_order=True))


def _model_change(j: pl.DataFrame, models: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
    new_trailing = (models.filter(pl.col("in_session") & pl.col("new"))
                    .group_by("session_id").agg(pl.col("name").sort().alias("new_models")))
    rows = j.filter(pl.col("llm_call_count") > 0).join(new_trailing, on="session_id", how="left")

    def build(r: dict):
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

    return _verdicts(rows, "model_change", build)
