"""What the API answers, as models: the one convention of every response. Field names
are camelCase (as the wire format and the SDKs), times are epoch milliseconds, a page of a
list carries ``nextCursor``; errors are problems (``ingest_api.problems``). Stores return
snake_case names and datetimes; these models turn them into the convention."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel

from ingest_api.wire import epoch_ms
from ml.verdicts import ANOMALY_TYPES, REGRESSION, SEVERITIES

EpochMs = Annotated[
    datetime,
    PlainSerializer(epoch_ms, return_type=Any, when_used="always"),
    WithJsonSchema({"type": "number", "description": "epoch milliseconds"}, mode="serialization"),
]
Severity = Literal[SEVERITIES]  # type: ignore[valid-type]
AnomalyType = Literal[ANOMALY_TYPES]  # type: ignore[valid-type]
NEXT_CURSOR = "the cursor of the next page (pass it as ?cursor=); null on the last page"


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class Agent(ApiModel):
    agent_name: str
    session_count: int
    first_seen: EpochMs
    last_seen: EpochMs


class Agents(ApiModel):
    agents: list[Agent]


class SessionSummary(ApiModel):
    session_id: str
    agent_name: str
    user_id: str | None
    parent_session_id: str | None
    start_time: EpochMs
    end_time: EpochMs | None
    status: str | None
    user_satisfaction: float | None
    confidence: float | None
    tags: list[str] | None
    turn_count: int
    llm_call_count: int
    tokens_total: int | None
    total_cost_usd: float
    tool_call_count: int
    tool_error_count: int


class SessionPage(ApiModel):
    sessions: list[SessionSummary]
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class ModelCost(ApiModel):
    model: str
    provider: str
    llm_calls: int
    cost_usd: float


class AgentMetrics(ApiModel):
    agent_name: str
    window: Literal["1h", "24h", "7d"]
    from_: EpochMs = Field(alias="from")
    to: EpochMs
    total_sessions: int
    success_rate: float | None
    avg_cost_usd: float | None
    total_cost_usd: float
    avg_latency_ms: float | None = Field(description="mean session duration")
    p95_latency_ms: float | None = Field(description="95th percentile of session duration")
    avg_satisfaction: float | None
    cost_by_model: list[ModelCost]


class Verdict(ApiModel):
    id: str
    session_id: str
    agent_name: str
    severity: Severity
    score: float | None
    explanation: str | None
    session_started_at: EpochMs | None = Field(description="start of the session the verdict is about")
    detected_at: EpochMs
    resolved: bool
    resolved_at: EpochMs | None


class Anomaly(Verdict):
    type: AnomalyType
    details: Any = Field(description="the detector's figures behind the verdict (its own JSON document)")
    model_version: str | None = Field(description="the trained model that gave it (isolation_forest), else null")


class Regression(Verdict):
    type: Literal[REGRESSION] = REGRESSION  # type: ignore[valid-type]
    differences: Any = Field(description="[{field, baseline, observed, explanation, severity, magnitude}]")
    baseline_id: str | None


class AnomalyPage(ApiModel):
    anomalies: list[Anomaly]
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class RegressionPage(ApiModel):
    regressions: list[Regression]
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class Baseline(ApiModel):
    baseline_id: str
    kind: Literal["auto", "pinned"]
    window_start: EpochMs
    window_end: EpochMs
    session_count: int
    metrics: dict[str, Any] = Field(description="the baseline's summary (ml.baseline.summarize), as computed")
    created_at: EpochMs
    active: bool


class Baselines(ApiModel):
    active: Baseline | None
    baselines: list[Baseline]


class Status(ApiModel):
    status: str


IncidentStatus = Literal["pending", "open", "resolved"]


class ExampleSession(ApiModel):
    session_id: str
    href: str = Field(description="the session in this API")


class Incident(ApiModel):
    incident_id: str
    agent_name: str
    kind: str = Field(description="an anomaly type, or regression (against the agent's baseline)")
    status: IncidentStatus = Field(description="pending: seen, not yet enough evidence to page anyone; "
                                               "open; resolved (quietly, or by hand)")
    first_seen: EpochMs = Field(description="start of its first flagged session")
    last_seen: EpochMs = Field(description="start of its latest flagged session")
    opened_at: EpochMs | None = Field(description="when the evidence became clear (the session that opened it)")
    resolved_at: EpochMs | None
    resolution: Literal["quiet", "hand"] | None
    opened_severity: Severity | None
    peak_severity: Severity
    current_severity: Severity = Field(description="the worst of the hour up to its latest verdict")
    affected_sessions: int
    span_sessions: int = Field(description="all the agent's sessions from first to last seen")
    traffic_share: float | None = Field(description="affectedSessions / spanSessions")
    verdict_count: int
    summary: str = Field(description="what changed, in numbers")
    example_session_ids: list[str]
    example_sessions: list[ExampleSession]
    figures: Any = Field(description="the figures behind the summary (their own JSON document)")
    acknowledged_at: EpochMs | None
    acknowledged_by: str | None = Field(description="the API key that acknowledged it")
    resolved_by: str | None = Field(description="the API key that resolved it by hand")
    updated_at: EpochMs


class IncidentEvent(ApiModel):
    event_id: str
    event: Literal["opened", "escalated", "resolved"]
    severity: Severity
    at: EpochMs = Field(description="in data time: the session that caused it, or the end of the quiet period")
    summary: str
    affected_sessions: int
    traffic_share: float | None
    created_at: EpochMs


class IncidentVerdict(ApiModel):
    verdict_id: str
    verdict_type: str = Field(description="an anomaly type, or regression")
    session_id: str
    agent_name: str
    severity: Severity
    score: float | None
    explanation: str | None
    session_started_at: EpochMs


class IncidentDetail(Incident):
    events: list[IncidentEvent]
    verdicts: list[IncidentVerdict] = Field(description="the newest first page of its per-session verdicts")
    verdicts_next_cursor: str | None = Field(description="more verdicts: GET /v1/incidents/{id}/verdicts?cursor=")


class IncidentPage(ApiModel):
    incidents: list[Incident]
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class IncidentVerdictPage(ApiModel):
    verdicts: list[IncidentVerdict]
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class AlertRoute(ApiModel):
    webhook: str = Field(description="the webhook's scheme and host; the rest is a secret and never shown")
    min_severity: Severity
    updated_at: EpochMs
