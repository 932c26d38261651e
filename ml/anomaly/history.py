"""The references every anomaly detector compares a session with: per-row statistics
of its agent's sessions in the trailing window before it (polars rolling windows closed
on the left), its agent's baseline where usable, the inputs of the creep trend, and
when each tool or model name was used (``ItemHistory``). Nothing here looks at a
session that started after the row it describes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from ml.features import IQR_TO_SIGMA, parse_iso

HISTORY = timedelta(days=7)
TRAILING = "7d"
MIN_HISTORY = 20  # sessions in the trailing window before a history-relative verdict
SIGMA_FLOOR = 0.05
LATENCY_RECENT = "2h"  # latency_spike: the agent's recent sessions
CREEP_RECENT = "6h"  # cost_creep: the recent level ...
CREEP_TREND = "24h"  # ... and the trend
MIN_STRATUM = 5  # trailing sessions of one length needed for its cost-per-call median
NOVELTY_PRIOR = timedelta(days=3)  # the agent must have this much history before a name counts as new
MIN_FAILURES = 10  # rated failed sessions needed to know how failures are rated


def roll(expr: pl.Expr, how: str, window: str = TRAILING, quantile: float | None = None) -> pl.Expr:
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


def count(expr: pl.Expr, window: str = TRAILING) -> pl.Expr:
    return roll(expr.is_not_null().cast(pl.Float64), "sum", window)


def trailing(f: pl.DataFrame) -> pl.DataFrame:
    """Per-row statistics of the agent's sessions that started in the window before the row."""
    cost, lat = pl.col("log_cost_per_call"), pl.col("log_latency_per_call")
    ok = pl.col("ok")
    conf_ok = pl.when(ok).then(pl.col("confidence"))
    sat_ok = pl.when(ok).then(pl.col("user_satisfaction"))
    sat_fail = pl.when(~ok).then(pl.col("user_satisfaction"))
    return f.with_columns(
        roll(pl.col("started_at").is_not_null().cast(pl.Float64), "sum").alias("h_n"),
        count(cost).alias("h_cost_n"),
        roll(cost, "quantile", quantile=0.5).alias("h_cost_med"),
        roll(cost, "quantile", quantile=0.25).alias("h_cost_q25"),
        roll(cost, "quantile", quantile=0.75).alias("h_cost_q75"),
        roll(pl.col("cost_per_call"), "mean").alias("h_cpc_mean"),
        roll(pl.col("cost_per_call"), "std").alias("h_cpc_std"),
        count(lat).alias("h_lat_n"),
        roll(lat, "quantile", quantile=0.5).alias("h_lat_med"),
        roll(lat, "quantile", quantile=0.25).alias("h_lat_q25"),
        roll(lat, "quantile", quantile=0.75).alias("h_lat_q75"),
        roll(pl.col("latency_per_call"), "mean").alias("h_lpc_mean"),
        roll(lat, "quantile", LATENCY_RECENT, quantile=0.5).alias("r_lat_med"),
        count(lat, LATENCY_RECENT).alias("r_lat_n"),
        roll(pl.col("log_output_per_call"), "quantile", quantile=0.5).alias("h_out_med"),
        roll(conf_ok, "quantile", quantile=0.5).alias("h_conf_ok_med"),
        roll(conf_ok, "quantile", quantile=0.9).alias("h_conf_ok_q90"),
        roll(sat_ok, "quantile", quantile=0.5).alias("h_sat_ok_med"),
        roll(sat_fail, "mean").alias("h_sat_fail_mean"),
        count(sat_fail).alias("h_sat_fail_n"),
        roll(pl.col("turn_count").cast(pl.Float64), "quantile", quantile=0.99).alias("h_turn_q99"),
        roll(pl.col("peak_tokens_input").cast(pl.Float64), "quantile", quantile=0.99).alias("h_peak_q99"),
        roll(pl.col("parallelism"), "quantile", quantile=0.5).alias("h_par_med"),
        roll(pl.col("parallelism"), "quantile", quantile=0.01).alias("h_par_q01"),
        count(pl.col("parallelism")).alias("h_par_n"),
        roll(pl.col("tools_per_turn"), "quantile", quantile=0.5).alias("h_tpt_med"),
        roll(pl.col("tool_call_count").cast(pl.Float64), "sum").alias("h_tool_calls"),
        roll(pl.col("tool_error_count").cast(pl.Float64), "sum").alias("h_tool_errors"),
        roll(ok.cast(pl.Float64), "mean").alias("h_ok_rate"),
        roll(cost, "quantile", CREEP_RECENT, quantile=0.5).alias("r_cost_med"),
        count(cost, CREEP_RECENT).alias("r_cost_n"),
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


def attach_baselines(f: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
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


def creep_inputs(f: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
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
        roll(x, "quantile", quantile=0.25).alias("g_q25"),
        roll(x, "quantile", quantile=0.75).alias("g_q75"),
        count(x).alias("g_n"),
        roll(x, "quantile", CREEP_RECENT, quantile=0.5).alias("r_gap_med"),
        count(x, CREEP_RECENT).alias("r_gap_n"),
        count(x, CREEP_TREND).alias("s_n"),
        roll(tx, "sum", CREEP_TREND).alias("s_t"),
        roll(x, "sum", CREEP_TREND).alias("s_x"),
        roll(tx * tx, "sum", CREEP_TREND).alias("s_tt"),
        roll(tx * x, "sum", CREEP_TREND).alias("s_tx"),
        roll(x * x, "sum", CREEP_TREND).alias("s_xx"),
    )


class ItemHistory:
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



def robust_sigma(q25: float | None, q75: float | None) -> float:
    """A robust standard deviation from quartiles, never below SIGMA_FLOOR."""
    if q25 is None or q75 is None:
        return SIGMA_FLOOR
    return max((q75 - q25) / IQR_TO_SIGMA, SIGMA_FLOOR)
