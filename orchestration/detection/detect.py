"""Detection for whole days: reads the session frame, asks ``ml`` for verdicts, writes
them back with their alerts.

A verdict depends only on sessions that started before the judged one (``ml``
guarantees that for a frame), on the agent's baseline when its window ended
before the session, and on a model trained on the days before the session's day
and stored the first time it is needed. So rerunning a day finds what the live
run found, and the verdicts' unique keys make the rerun add nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import polars as pl
import psycopg

from ml import anomaly, baseline, forest, regression
from ml.verdicts import ANOMALY_SCHEMA, ISOLATION_FOREST
from orchestration import watermark
from orchestration.detection import baselines, frames, models, verdicts
from orchestration.detection import incidents as incident_store
from orchestration.partitions import day_start

# Child sessions of a day's last sessions may start just after midnight.
CHILD_SLACK = timedelta(hours=1)
# How much of an agent's early history the first stable window is looked for in.
BASELINE_SEARCH = timedelta(days=7)
VERDICT_COLUMNS = list(ANOMALY_SCHEMA)


@dataclass
class DetectionSummary:
    days: list[str] = field(default_factory=list)
    judged_sessions: int = 0
    new_anomalies: Counter = field(default_factory=Counter)
    new_regressions: Counter = field(default_factory=Counter)
    baselines_created: list[str] = field(default_factory=list)
    models_trained: list[str] = field(default_factory=list)
    incidents: incident_store.GroupingSummary = field(default_factory=incident_store.GroupingSummary)

    def as_metadata(self) -> dict[str, object]:
        return {
            "days": ", ".join(self.days),
            "judged_sessions": self.judged_sessions,
            "new_anomalies": sum(self.new_anomalies.values()),
            "new_anomalies_by_type": dict(sorted(self.new_anomalies.items())),
            "new_regressions": sum(self.new_regressions.values()),
            "new_regressions_by_severity": dict(sorted(self.new_regressions.items())),
            "incidents_opened": self.incidents.incidents_opened,
            "incidents_resolved": self.incidents.incidents_resolved,
            "incident_events": self.incidents.events,
            "new_alerts": self.incidents.alerts,
            "baselines_created": ", ".join(self.baselines_created) or "none",
            "models_trained": len(self.models_trained),
        }


@dataclass(frozen=True)
class Built:
    """The marts' rows written by builds with a watermark in (after, upto]: what detection
    judges when it follows the builds rather than judging whole days."""

    after: int
    upto: int


def judge_new(conn: psycopg.Connection, days: list[date], log=None,
              alert_min_severity: str = "critical") -> DetectionSummary:
    """Judge every session the marts wrote since detection's own watermark (they started on
    ``days``), group the verdicts into incidents, and move the watermark: what a run for new
    sessions does, and the live path. A failure before the end leaves it all to the next."""
    built = Built(after=watermark.judged(conn), upto=watermark.of_marts(conn))
    summary = detect_days(conn, days, built=built, log=log, alert_min_severity=alert_min_severity)
    watermark.set_judged(conn, built.upto)
    return summary


def detect_days(conn: psycopg.Connection, days: list[date], built: Built | None = None,
                log=None, alert_min_severity: str = "critical") -> DetectionSummary:
    """Judge the sessions that started on ``days`` (all of them, or only those ``built``), then
    group the project's new verdicts into incidents."""
    summary = DetectionSummary(days=[d.isoformat() for d in days])
    if not days or not frames.marts_ready(conn):
        return summary
    first, last = day_start(min(days)), day_start(max(days)) + timedelta(days=1)
    after, upto = (built.after, built.upto) if built else (None, None)
    judged = frames.projects_with_sessions(conn, first, last, after, upto)
    for project_id in judged:
        frame = frames.session_frame(conn, project_id, first - anomaly.HISTORY, last + CHILD_SLACK)
        built_ids = frames.built_between(conn, project_id, first, last, after, upto) if built else None
        _ensure_auto_baselines(conn, project_id, frame, last, summary)
        active = baselines.active(conn, project_id)
        for day in sorted(days):
            _detect_day(conn, project_id, frame, day, active, built_ids, summary)
    # Every project with something new for grouping: judged now, or left by a failed run.
    marts_watermark = upto if upto is not None else watermark.of_marts(conn)
    for project_id in sorted(set(judged) | set(incident_store.projects_waiting(conn))):
        incident_store.group_project(conn, project_id, marts_watermark, alert_min_severity, summary.incidents)
    if log is not None:
        log(f"detection: {summary.as_metadata()}")
    return summary


def _ensure_auto_baselines(conn: psycopg.Connection, project_id: str, frame: pl.DataFrame, until: datetime,
                           summary: DetectionSummary) -> None:
    """The first stable window of each agent's history, found once and kept."""
    agents = sorted(frame.get_column("agent_name").unique().to_list())
    for agent, first in frames.first_sessions_without_baseline(conn, project_id, agents).items():
        history = frames.session_frame(conn, project_id, first, min(until, first + BASELINE_SEARCH), agent_name=agent)
        window = baseline.find_stable_window(history)
        if window is None:
            continue
        start, end = window
        in_window = history.filter((pl.col("started_at") >= start) & (pl.col("started_at") < end))
        if baselines.save_automatic(conn, project_id, agent, start, end, in_window.height,
                                    baseline.summarize(in_window)) is not None:
            summary.baselines_created.append(agent)


def _detect_day(conn: psycopg.Connection, project_id: str, frame: pl.DataFrame, day: date,
                active: dict[str, baselines.Baseline], built_ids: pl.DataFrame | None,
                summary: DetectionSummary) -> None:
    start = day_start(day)
    end = start + timedelta(days=1)
    history = frame.filter(pl.col("started_at") < end + CHILD_SLACK)
    todays = frame.filter((pl.col("started_at") >= start) & (pl.col("started_at") < end))
    judged = todays if built_ids is None else todays.join(built_ids, on="session_id", how="semi")
    if judged.is_empty():
        return
    summary.judged_sessions += judged.height
    started = judged.select("session_id", pl.col("started_at").alias("session_started_at"))

    # Rules and failure modes, against each agent's own history (and baseline, when
    # its window closed before this day).
    usable = {agent: b.metrics for agent, b in active.items() if b.window_end <= start}
    found = [anomaly.detect(history, day_start=start, day_end=end, baselines=usable)
             .join(judged.select("session_id"), on="session_id", how="semi")]

    # The forest of each agent, trained on the days before this one, stored once.
    for agent in sorted(judged.get_column("agent_name").unique().to_list()):
        model = models.load(conn, project_id, agent, ISOLATION_FOREST, day)
        if model is None:
            trained = forest.train(history.filter((pl.col("agent_name") == agent) & (pl.col("started_at") < start)),
                                   agent_name=agent, day_start=start)
            if trained is None:
                continue
            model = models.save(conn, project_id, agent, ISOLATION_FOREST, day, trained)
            summary.models_trained.append(model.version)
        found.append(forest.score(model, judged.filter(pl.col("agent_name") == agent)))

    found = [v.select(VERDICT_COLUMNS) for v in found if not v.is_empty()]
    if found:
        anomalies = pl.concat(found, how="vertical").join(started, on="session_id")
        summary.new_anomalies.update(verdicts.write(conn, verdicts.ANOMALIES, project_id, anomalies))

    # Regressions against the active baseline, for sessions after its window.
    for agent, base in sorted(active.items()):
        sessions = judged.filter((pl.col("agent_name") == agent) & (pl.col("started_at") >= base.window_end))
        if sessions.is_empty():
            continue
        regressed = regression.compare(sessions, base.metrics)
        if regressed.is_empty():
            continue
        regressed = regressed.join(started, on="session_id").with_columns(
            pl.lit(str(base.baseline_id)).alias("baseline_id"))
        summary.new_regressions.update(verdicts.write(conn, verdicts.REGRESSIONS, project_id, regressed))
