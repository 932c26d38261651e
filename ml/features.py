"""Per-session measures the detectors share, derived from the session frame alone.

Raw session totals mix *how much work* a session did with *how well* it did it: a
support conversation of six turns costs six times one of a single turn without
anything being wrong. So cost and latency are judged per unit of work:

* ``cost_per_call``: total cost / LLM calls (price x tokens per call; what a price,
  prompt or context change moves);
* ``latency_per_call``: the agent's active time (LLM latency + wall time of its tool
  batches, *not* the user's think time between turns) / LLM calls;
* ``parallelism``: tool latency summed / tool wall time (above 1 when tools overlap);
* ``tools`` / ``models``: the session's distinct tool and model names as lists;
* ``calls_bucket``: LLM calls (capped at 12), to compare a session's cost per call
  with sessions of the same length: later calls carry the conversation so far, so
  a long session costs more per call than a short one without anything wrong.

Logs (``log_*``) are what the robust statistics work on: costs and latencies are
skewed, their logs nearly symmetric, and a ratio is a difference of logs.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import polars as pl

from ml.schema import conform

IQR_TO_SIGMA = 1.349  # a normal distribution's interquartile range in sigmas
MAX_CALLS_BUCKET = 12  # sessions of at least this many LLM calls are compared together


def derive(frame: pl.DataFrame) -> pl.DataFrame:
    """The conformed frame plus the derived measures (see the module docstring)."""
    f = conform(frame)
    calls = pl.col("llm_call_count")
    active = pl.col("llm_latency_ms") + pl.col("tool_wall_ms")
    cost_per_call = pl.when(calls > 0).then(pl.col("total_cost_usd") / calls)
    latency_per_call = pl.when((calls > 0) & (active > 0)).then(active / calls)
    return f.with_columns(
        cost_per_call.alias("cost_per_call"),
        pl.when(cost_per_call > 0).then(cost_per_call.log()).alias("log_cost_per_call"),
        active.alias("active_ms"),
        latency_per_call.alias("latency_per_call"),
        latency_per_call.log().alias("log_latency_per_call"),
        pl.when((calls > 0) & (pl.col("tokens_output") > 0))
        .then((pl.col("tokens_output") / calls).log()).alias("log_output_per_call"),
        pl.when((pl.col("tool_call_count") >= 2) & (pl.col("tool_wall_ms") > 0))
        .then(pl.col("tool_latency_ms") / pl.col("tool_wall_ms")).alias("parallelism"),
        pl.when(pl.col("turn_count") > 0).then(pl.col("tool_call_count") / pl.col("turn_count"))
        .alias("tools_per_turn"),
        pl.col("llm_call_count").clip(0, MAX_CALLS_BUCKET).alias("calls_bucket"),
        (pl.col("status") == "success").alias("ok"),
        _split("tool_sequence").list.unique(maintain_order=True).alias("tools"),
        _split("models").alias("model_list"),
    )


def _split(column: str) -> pl.Expr:
    return (pl.when(pl.col(column) == "").then(pl.lit([], dtype=pl.List(pl.Utf8)))
            .otherwise(pl.col(column).str.split(",")))


def micros(moment: datetime) -> int:
    """A datetime as epoch microseconds (naive = UTC), the unit of the frame's started_at."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def clean_number(value: Any, digits: int = 6) -> Any:
    """JSON-safe rounding: NaN/inf become None, numpy scalars plain Python."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if math.isnan(number) or math.isinf(number):
        return None
    if number == int(number) and abs(number) < 1e15 and digits >= 0 and not isinstance(value, float):
        return int(number)
    return float(f"{number:.{digits}g}")


def to_json(value: Any) -> str:
    return json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        return iso(value)
    return clean_number(value)


def money(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def millis(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


def pct(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.{digits}f}%"


def times(value: float) -> str:
    return f"{value:.1f}x"
