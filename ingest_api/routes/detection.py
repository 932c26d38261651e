"""Detection's output for an agent: anomalies, regressions, baselines."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Query
from pydantic import BaseModel, Field

from ingest_api.deps import ConnectionDep, PrincipalDep
from ingest_api.routes.paging import cursor_position, require_zones
from ingest_api.store import verdicts as store

router = APIRouter(tags=["detection"])

Severity = Literal["minor", "major", "critical"]
ANOMALY_TYPES = ("cost_spike", "latency_spike", "tool_usage_change", "isolation_forest", "skill_bloat",
                 "context_rot", "confident_hallucination", "sequential_tax", "cost_creep", "cascade_failure",
                 "model_change")


def _filter(since: datetime | None, until: datetime | None, cursor: str | None, **fields) -> store.VerdictFilter:
    require_zones(since, until)
    if since is not None and until is not None and until <= since:
        raise HTTPException(422, "until must be after since")
    return store.VerdictFilter(since=since, until=until, after=cursor_position(cursor), **fields)


SinceQuery = Annotated[datetime | None, Query(description="session started at or after (ISO 8601 with zone)")]
UntilQuery = Annotated[datetime | None, Query(description="session started before (ISO 8601 with zone)")]
LimitQuery = Annotated[int, Query(ge=1, le=500)]
CursorQuery = Annotated[str | None, Query(description="next_cursor of the previous page")]


@router.get("/v1/agents/{agent_name}/anomalies",
            summary="An agent's anomalies, newest session first, with keyset pagination")
async def list_anomalies(
    agent_name: str, principal: PrincipalDep, conn: ConnectionDep,
    type: Annotated[str | None, Query(description=f"one of: {', '.join(ANOMALY_TYPES)}")] = None,
    severity: Severity | None = None,
    resolved: bool | None = None,
    since: SinceQuery = None, until: UntilQuery = None, limit: LimitQuery = 50, cursor: CursorQuery = None,
) -> dict:
    if type is not None and type not in ANOMALY_TYPES:
        raise HTTPException(422, f"unknown anomaly type {type!r}; one of: {', '.join(ANOMALY_TYPES)}")
    f = _filter(since, until, cursor, anomaly_type=type, severity=severity, resolved=resolved, limit=limit)
    items, next_cursor = await store.list_verdicts(conn, "anomalies", principal.project_id, agent_name, f)
    return {"anomalies": items, "next_cursor": next_cursor}


@router.get("/v1/agents/{agent_name}/regressions",
            summary="An agent's regressions against its baseline, newest session first")
async def list_regressions(
    agent_name: str, principal: PrincipalDep, conn: ConnectionDep,
    severity: Severity | None = None,
    resolved: bool | None = None,
    since: SinceQuery = None, until: UntilQuery = None, limit: LimitQuery = 50, cursor: CursorQuery = None,
) -> dict:
    f = _filter(since, until, cursor, severity=severity, resolved=resolved, limit=limit)
    items, next_cursor = await store.list_verdicts(conn, "regressions", principal.project_id, agent_name, f)
    return {"regressions": items, "next_cursor": next_cursor}


class Resolution(BaseModel):
    resolved: bool = True


async def _resolve(kind: store.Kind, agent_name: str, verdict_id: uuid.UUID, principal, conn,
                   body: Resolution | None) -> dict:
    item = await store.set_resolved(conn, kind, principal.project_id, agent_name, verdict_id,
                                    (body or Resolution()).resolved)
    if item is None:
        raise HTTPException(404, f"no such {kind[:-1] if kind == 'regressions' else 'anomaly'} for this agent")
    return item


@router.post("/v1/agents/{agent_name}/anomalies/{anomaly_id}/resolve",
             summary="Mark an anomaly resolved (or, with {\"resolved\": false}, open again)")
async def resolve_anomaly(agent_name: str, anomaly_id: uuid.UUID, principal: PrincipalDep, conn: ConnectionDep,
                          body: Annotated[Resolution | None, Body()] = None) -> dict:
    return await _resolve("anomalies", agent_name, anomaly_id, principal, conn, body)


@router.post("/v1/agents/{agent_name}/regressions/{regression_id}/resolve",
             summary="Mark a regression resolved (or, with {\"resolved\": false}, open again)")
async def resolve_regression(agent_name: str, regression_id: uuid.UUID, principal: PrincipalDep,
                             conn: ConnectionDep, body: Annotated[Resolution | None, Body()] = None) -> dict:
    return await _resolve("regressions", agent_name, regression_id, principal, conn, body)


@router.get("/v1/agents/{agent_name}/baseline", summary="The agent's baselines, the active one first")
async def get_baselines(agent_name: str, principal: PrincipalDep, conn: ConnectionDep) -> dict:
    found = await store.baselines(conn, principal.project_id, agent_name)
    return {"active": next((b for b in found if b["active"]), None), "baselines": found}


class BaselineWindow(BaseModel):
    from_: datetime = Field(alias="from", description="window start (ISO 8601 with zone)")
    to: datetime = Field(description="window end, exclusive")


@router.put("/v1/agents/{agent_name}/baseline", status_code=201,
            summary="Pin the agent's baseline to its sessions in a time range",
            description="Regressions of sessions that start after the window are judged against it; "
                        "the automatic baseline (the first stable window) is kept but inactive.")
async def pin_baseline(agent_name: str, window: BaselineWindow, principal: PrincipalDep,
                       conn: ConnectionDep) -> dict:
    if window.from_.tzinfo is None or window.to.tzinfo is None:
        raise HTTPException(422, "from and to need a time zone, e.g. 2026-11-25T10:00:00Z")
    if window.to <= window.from_:
        raise HTTPException(422, "to must be after from")
    try:
        return await store.pin_baseline(conn, principal.project_id, agent_name, window.from_, window.to)
    except store.MartsMissing:
        raise HTTPException(503, "the marts have not been built yet") from None
    except store.EmptyWindow:
        raise HTTPException(422, f"no session of {agent_name!r} started in that window (as of the marts)") from None
