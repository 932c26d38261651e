"""Detection's output for an agent: anomalies, regressions, baselines."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query
from pydantic import BaseModel, Field

from ingest_api.deps import AdminKey, ConnectionDep, ReadKey
from ingest_api.paging import INSTANT, decode_cursor, instant, invalid, time_range
from ingest_api.schemas import (
    Anomaly,
    AnomalyPage,
    AnomalyType,
    Baseline,
    Baselines,
    Regression,
    RegressionPage,
    Severity,
)
from ingest_api.store import baselines as baseline_store
from ingest_api.store import verdicts as store

router = APIRouter(tags=["detection"])

SinceQuery = Annotated[str | None, Query(description=f"session started at or after: {INSTANT}")]
UntilQuery = Annotated[str | None, Query(description=f"session started before: {INSTANT}")]
LimitQuery = Annotated[int, Query(ge=1, le=500)]
CursorQuery = Annotated[str | None, Query(description="nextCursor of the previous page")]


def _filter(since: str | None, until: str | None, cursor: str | None, **fields) -> store.VerdictFilter:
    start, end = time_range(since, until)
    return store.VerdictFilter(since=start, until=end, after=decode_cursor(cursor), **fields)


@router.get("/v1/agents/{agent_name}/anomalies", response_model=AnomalyPage,
            summary="An agent's anomalies, newest session first, with keyset pagination")
async def list_anomalies(
    agent_name: str, principal: ReadKey, conn: ConnectionDep,
    type: AnomalyType | None = None,
    severity: Severity | None = None,
    resolved: bool | None = None,
    since: SinceQuery = None, until: UntilQuery = None, limit: LimitQuery = 50, cursor: CursorQuery = None,
) -> dict:
    f = _filter(since, until, cursor, anomaly_type=type, severity=severity, resolved=resolved, limit=limit)
    items, next_cursor = await store.list_verdicts(conn, "anomalies", principal.project_id, agent_name, f)
    return {"anomalies": items, "next_cursor": next_cursor}


@router.get("/v1/agents/{agent_name}/regressions", response_model=RegressionPage,
            summary="An agent's regressions against its baseline, newest session first")
async def list_regressions(
    agent_name: str, principal: ReadKey, conn: ConnectionDep,
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
        raise HTTPException(404, f"no such {'regression' if kind == 'regressions' else 'anomaly'} for this agent")
    return item


@router.post("/v1/agents/{agent_name}/anomalies/{anomaly_id}/resolve", response_model=Anomaly,
             summary="Mark an anomaly resolved (or, with {\"resolved\": false}, open again)")
async def resolve_anomaly(agent_name: str, anomaly_id: uuid.UUID, principal: AdminKey, conn: ConnectionDep,
                          body: Annotated[Resolution | None, Body()] = None) -> dict:
    return await _resolve("anomalies", agent_name, anomaly_id, principal, conn, body)


@router.post("/v1/agents/{agent_name}/regressions/{regression_id}/resolve", response_model=Regression,
             summary="Mark a regression resolved (or, with {\"resolved\": false}, open again)")
async def resolve_regression(agent_name: str, regression_id: uuid.UUID, principal: AdminKey,
                             conn: ConnectionDep, body: Annotated[Resolution | None, Body()] = None) -> dict:
    return await _resolve("regressions", agent_name, regression_id, principal, conn, body)


@router.get("/v1/agents/{agent_name}/baseline", response_model=Baselines,
            summary="The agent's baselines, the active one first")
async def get_baselines(agent_name: str, principal: ReadKey, conn: ConnectionDep) -> dict:
    found = await baseline_store.list_baselines(conn, principal.project_id, agent_name)
    return {"active": next((b for b in found if b["active"]), None), "baselines": found}


class BaselineWindow(BaseModel):
    from_: str | int | float = Field(alias="from", description=f"window start: {INSTANT}")
    to: str | int | float = Field(description=f"window end, exclusive: {INSTANT}")


@router.put("/v1/agents/{agent_name}/baseline", status_code=201, response_model=Baseline,
            summary="Pin the agent's baseline to its sessions in a time range",
            description="Regressions of sessions that start after the window are judged against it; "
                        "the automatic baseline (the first stable window) is kept but inactive.")
async def pin_baseline(agent_name: str, window: BaselineWindow, principal: AdminKey,
                       conn: ConnectionDep) -> dict:
    start, end = instant(window.from_, "from"), instant(window.to, "to")
    if end <= start:
        raise invalid("to", "must be after from")
    try:
        return await baseline_store.pin(conn, principal.project_id, agent_name, start, end)
    except baseline_store.MartsMissing:
        raise HTTPException(503, "the marts have not been built yet") from None
    except baseline_store.EmptyWindow:
        raise HTTPException(422, f"no session of {agent_name!r} started in that window (as of the marts)") from None
    except baseline_store.PinConflict:
        raise HTTPException(409, "another pin of this agent's baseline was committed at the same time; "
                                 "read the baselines and retry if yours is still wanted") from None
