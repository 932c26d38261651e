"""The frames incident grouping reads and returns, and the one that feeds it verdicts.

Everything is keyed by natural values so that a caller can persist it as it comes:
an incident by ``incident_id`` (a uuid5 of its project, agent, kind, first session
start and first session id), a membership by (``incident_id``, ``session_id``,
``verdict_type``), an event by ``event_id`` (a uuid5 of the incident, the event and
its severity).
"""

from __future__ import annotations

import polars as pl

from ml.schema import UTC_MICROS
from ml.verdicts import REGRESSION

# One verdict to group: an anomaly (verdict_type = its anomaly type) or a regression
# (verdict_type = "regression"; details = its differences), with its session's start.
VERDICT_SCHEMA: dict[str, pl.DataType] = {
    "project_id": pl.Utf8(), "session_id": pl.Utf8(), "agent_name": pl.Utf8(),
    "session_started_at": UTC_MICROS, "verdict_type": pl.Utf8(), "severity": pl.Utf8(), "score": pl.Float64(),
    "details": pl.Utf8(),
}

# The sessions grouping counts (traffic share, quiet periods): any frame with these columns,
# such as the judged session frame (ml.schema.SESSION_SCHEMA).
SESSION_COLUMNS = ("project_id", "session_id", "agent_name", "started_at")

STATUSES = ("pending", "open", "resolved", "discarded")
INCIDENT_SCHEMA: dict[str, pl.DataType] = {
    "incident_id": pl.Utf8(),
    "project_id": pl.Utf8(),
    "agent_name": pl.Utf8(),
    "kind": pl.Utf8(),  # an anomaly type, or "regression"
    # pending: evidence is gathering, not shown nor alerted; open; resolved (quiet or by hand);
    # discarded: a pending incident whose evidence stopped before it opened
    "status": pl.Utf8(),
    "first_seen": UTC_MICROS,  # start of its first session (its first verdict)
    "last_seen": UTC_MICROS,  # start of its latest session
    "opened_at": UTC_MICROS,  # data time its opening rule was met (null while pending)
    "resolved_at": UTC_MICROS,
    "resolution": pl.Utf8(),  # "quiet" or "hand"
    "opened_severity": pl.Utf8(),
    "peak_severity": pl.Utf8(),
    "current_severity": pl.Utf8(),  # the worst of its verdicts in the hour up to last_seen
    "affected_sessions": pl.Int64(),  # distinct sessions of the agent with a verdict in it
    "span_sessions": pl.Int64(),  # the agent's sessions from first_seen to last_seen
    "traffic_share": pl.Float64(),  # affected / span
    "verdict_count": pl.Int64(),
    "summary": pl.Utf8(),
    "example_session_ids": pl.List(pl.Utf8()),  # the first session, then the most severe
    "figures": pl.Utf8(),  # JSON: what the summary is computed from
    "state": pl.Utf8(),  # JSON: counters grouping needs to continue (persist it as it is)
}

MEMBER_SCHEMA: dict[str, pl.DataType] = {
    "incident_id": pl.Utf8(), "project_id": pl.Utf8(), "agent_name": pl.Utf8(), "session_id": pl.Utf8(),
    "verdict_type": pl.Utf8(), "session_started_at": UTC_MICROS, "severity": pl.Utf8(),
}

EVENTS = ("opened", "escalated", "resolved")
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.Utf8(), "incident_id": pl.Utf8(), "project_id": pl.Utf8(), "agent_name": pl.Utf8(),
    "kind": pl.Utf8(), "event": pl.Utf8(), "severity": pl.Utf8(), "at": UTC_MICROS, "summary": pl.Utf8(),
    "affected_sessions": pl.Int64(), "traffic_share": pl.Float64(),
    "example_session_ids": pl.List(pl.Utf8()),
}


def no_incidents() -> pl.DataFrame:
    return pl.DataFrame(schema=INCIDENT_SCHEMA)


def verdict_frame(anomalies: pl.DataFrame | None, regressions: pl.DataFrame | None,
                  sessions: pl.DataFrame) -> pl.DataFrame:
    """Anomaly and regression verdicts (``ml.verdicts`` frames, as detectors return them) as
    one VERDICT_SCHEMA frame, with project and session start taken from ``sessions`` (a
    verdict whose session is not in it is dropped: grouping needs its time)."""
    start = sessions.select("session_id", "project_id", pl.col("started_at").alias("session_started_at")).unique(
        "session_id", keep="first")
    parts = []
    if anomalies is not None and not anomalies.is_empty():
        parts.append(anomalies.select("session_id", "agent_name", pl.col("anomaly_type").alias("verdict_type"),
                                      "severity", "score", "details"))
    if regressions is not None and not regressions.is_empty():
        parts.append(regressions.select("session_id", "agent_name", pl.lit(REGRESSION).alias("verdict_type"),
                                        "severity", "score", pl.col("differences").alias("details")))
    if not parts:
        return pl.DataFrame(schema=VERDICT_SCHEMA)
    both = pl.concat([p.cast({"score": pl.Float64}) for p in parts], how="vertical")
    return both.join(start, on="session_id").select(list(VERDICT_SCHEMA)).cast(VERDICT_SCHEMA)
