"""What a verdict is: its kinds, types and severities, the frames detectors return, and
the helper that builds those frames. Everything outside ``ml`` that names a verdict
type or severity (the API's filters, the dbt tests, Superset's filters, the alerts)
takes it from here or is checked against it by a test.

To add an anomaly type: write its detector in ``ml.anomaly`` (a function returning
``build(rows, TYPE, ...)``), add the name to ``FAILURE_MODES`` (or ``RULES``, or
``WINDOW_SHIFTS``) below, and list it in the dbt accepted values of ``fct_anomalies``
(a test compares them).
"""

from __future__ import annotations

from typing import Callable

import polars as pl

from ml.features import to_json

# The seed's rules and the failure modes, found by ml.anomaly; the forest's own type.
RULES = ("cost_spike", "latency_spike", "tool_usage_change")
FAILURE_MODES = ("skill_bloat", "context_rot", "confident_hallucination", "sequential_tax", "cost_creep",
                 "cascade_failure", "model_change")
ISOLATION_FOREST = "isolation_forest"
# Shifts over a window of an agent's latest sessions that no single session shows
# (ml.anomaly.windows); the verdict is on the session that completed the window.
TOOL_SHARE_SHIFT = "tool_share_shift"
WINDOW_SHIFTS = (TOOL_SHARE_SHIFT,)
ANOMALY_TYPES = (*RULES, ISOLATION_FOREST, *FAILURE_MODES, *WINDOW_SHIFTS)

# A regression has no type of its own beyond this (its fields say what differed).
REGRESSION = "regression"
# The two kinds of verdict and what detection writes them to.
KINDS = ("anomaly", REGRESSION)

SEVERITIES = ("minor", "major", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

# Anomaly verdicts as every anomaly detector returns them (details: a JSON document).
ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "session_id": pl.Utf8(), "agent_name": pl.Utf8(), "anomaly_type": pl.Utf8(), "severity": pl.Utf8(),
    "score": pl.Float64(), "explanation": pl.Utf8(), "details": pl.Utf8(), "model_version": pl.Utf8(),
}
# Regression verdicts (differences: a JSON list of {field, baseline, observed, explanation, severity}).
REGRESSION_SCHEMA: dict[str, pl.DataType] = {
    "session_id": pl.Utf8(), "agent_name": pl.Utf8(), "severity": pl.Utf8(), "score": pl.Float64(),
    "explanation": pl.Utf8(), "differences": pl.Utf8(),
}


def no_anomalies() -> pl.DataFrame:
    return pl.DataFrame(schema=ANOMALY_SCHEMA)


def anomalies(rows: list[dict]) -> pl.DataFrame:
    """Verdict dicts (model_version may be absent) -> an ANOMALY_SCHEMA frame."""
    if not rows:
        return no_anomalies()
    return pl.DataFrame([{"model_version": None, **row} for row in rows], schema=ANOMALY_SCHEMA, orient="row")


def build(rows: pl.DataFrame, anomaly_type: str,
          make: Callable[[dict], tuple[str, float, str, dict] | None]) -> pl.DataFrame:
    """Rows -> verdicts of ``anomaly_type``; ``make(row)`` gives (severity, score, explanation,
    details) or None for no verdict. Explanations start with a capital letter."""
    out = []
    for row in rows.iter_rows(named=True):
        made = make(row)
        if made is None:
            continue
        severity, score, explanation, details = made
        out.append({"session_id": row["session_id"], "agent_name": row["agent_name"], "anomaly_type": anomaly_type,
                    "severity": severity, "score": float(round(score, 4)),
                    "explanation": capitalized(explanation), "details": to_json(details)})
    return anomalies(out)


def capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]
