"""The session frame every detector reads: one row per session, fixed columns and dtypes.

The caller builds it from the marts (or tests from wire-format sessions); ``conform``
selects and casts to this schema so a detector never sees an unexpected column or type.
Tool parallelism is in the frame as two sums: ``tool_latency_ms`` (every tool call's
own latency) and ``tool_wall_ms`` (per turn, first tool start to last tool end);
their ratio above 1 means tools overlapped.
"""

from __future__ import annotations

import polars as pl

UTC_MICROS = pl.Datetime("us", "UTC")

SESSION_SCHEMA: dict[str, pl.DataType] = {
    "project_id": pl.Utf8(),
    "session_id": pl.Utf8(),
    "parent_session_id": pl.Utf8(),
    "agent_name": pl.Utf8(),
    "started_at": UTC_MICROS,
    "duration_ms": pl.Float64(),
    "turn_count": pl.Int64(),
    "llm_call_count": pl.Int64(),
    "tool_call_count": pl.Int64(),
    "tool_error_count": pl.Int64(),
    "tokens_input": pl.Int64(),
    "tokens_output": pl.Int64(),
    "tokens_total": pl.Int64(),
    "peak_tokens_input": pl.Int64(),
    "total_cost_usd": pl.Float64(),
    "llm_latency_ms": pl.Float64(),
    "tool_latency_ms": pl.Float64(),
    "tool_wall_ms": pl.Float64(),
    "models": pl.Utf8(),
    "providers": pl.Utf8(),
    "tool_sequence": pl.Utf8(),
    "status": pl.Utf8(),
    "user_satisfaction": pl.Float64(),
    "confidence": pl.Float64(),
}

# Columns that may be null; every other column is filled when missing values appear.
NULLABLE = {"parent_session_id", "duration_ms", "user_satisfaction", "confidence"}
_FILL = {"models": "", "providers": "", "tool_sequence": "", "status": "unknown"}


class SchemaError(ValueError):
    """The frame lacks columns of the session contract."""


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` reduced to SESSION_SCHEMA's columns, in order, cast to its dtypes.

    Extra columns are dropped; a missing column raises SchemaError naming all of
    them. Naive datetimes are taken as UTC. Nulls in non-nullable counters become 0
    and in the text columns "" (so detectors can rely on them)."""
    missing = [name for name in SESSION_SCHEMA if name not in frame.columns]
    if missing:
        raise SchemaError(f"session frame lacks column(s): {', '.join(missing)} "
                          f"(expected {', '.join(SESSION_SCHEMA)})")
    columns = []
    for name, dtype in SESSION_SCHEMA.items():
        column = pl.col(name)
        if name == "started_at":
            current = frame.schema[name]
            if isinstance(current, pl.Datetime):
                column = (column.dt.replace_time_zone("UTC") if current.time_zone is None
                          else column.dt.convert_time_zone("UTC"))
            column = column.cast(dtype)
        else:
            column = column.cast(dtype)
        if name not in NULLABLE and name != "started_at":
            fill = _FILL.get(name, 0)
            column = column.fill_null(fill)
        columns.append(column.alias(name))
    return frame.select(columns)
