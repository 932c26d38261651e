"""Incidents (detection's verdicts grouped into what an on-call engineer acts on), what is done
to them, and where the project's incident alerts go."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import Field, HttpUrl

from ingest_api.deps import AdminKey, ConnectionDep, ReadKey
from ingest_api.paging import INSTANT, decode_cursor, time_range
from ingest_api.schemas import (
    AlertRoute,
    ApiModel,
    IncidentDetail,
    IncidentPage,
    IncidentStatus,
    IncidentVerdictPage,
    Severity,
)
from ingest_api.store import alert_routes
from ingest_api.store import incidents as store

router = APIRouter(tags=["incidents"])

LimitQuery = Annotated[int, Query(ge=1, le=500)]
CursorQuery = Annotated[str | None, Query(description="nextCursor of the previous page")]
# The first page of verdicts GET /v1/incidents/{id} carries.
FIRST_VERDICTS = 50


async def _page(conn, principal, agent_name: str | None, status, kind, severity, acknowledged, since, until,
                limit, cursor) -> dict:
    start, end = time_range(since, until)
    f = store.IncidentFilter(agent_name=agent_name, status=status, kind=kind, severity=severity,
                             acknowledged=acknowledged, since=start, until=end, after=decode_cursor(cursor),
                             limit=limit)
    items, next_cursor = await store.list_incidents(conn, principal.project_id, f)
    return {"incidents": items, "next_cursor": next_cursor}


@router.get("/v1/incidents", response_model=IncidentPage,
            summary="The project's incidents, most recently started first, with keyset pagination")
async def list_incidents(
    principal: ReadKey, conn: ConnectionDep,
    status: IncidentStatus | None = None,
    agent: Annotated[str | None, Query(description="one agent's incidents")] = None,
    kind: Annotated[str | None, Query(description="an anomaly type, or regression")] = None,
    severity: Annotated[Severity | None, Query(description="peak severity")] = None,
    acknowledged: bool | None = None,
    since: Annotated[str | None, Query(description=f"active at or after: {INSTANT}")] = None,
    until: Annotated[str | None, Query(description=f"started before: {INSTANT}")] = None,
    limit: LimitQuery = 50, cursor: CursorQuery = None,
) -> dict:
    return await _page(conn, principal, agent, status, kind, severity, acknowledged, since, until, limit, cursor)


@router.get("/v1/agents/{agent_name}/incidents", response_model=IncidentPage,
            summary="An agent's incidents, most recently started first, with keyset pagination")
async def list_agent_incidents(
    agent_name: str, principal: ReadKey, conn: ConnectionDep,
    status: IncidentStatus | None = None,
    kind: Annotated[str | None, Query(description="an anomaly type, or regression")] = None,
    severity: Annotated[Severity | None, Query(description="peak severity")] = None,
    acknowledged: bool | None = None,
    since: Annotated[str | None, Query(description=f"active at or after: {INSTANT}")] = None,
    until: Annotated[str | None, Query(description=f"started before: {INSTANT}")] = None,
    limit: LimitQuery = 50, cursor: CursorQuery = None,
) -> dict:
    return await _page(conn, principal, agent_name, status, kind, severity, acknowledged, since, until, limit,
                       cursor)


def _missing() -> HTTPException:
    return HTTPException(404, "no such incident in this project")


async def _detail(conn, principal, incident_id: uuid.UUID, item: dict | None) -> dict:
    if item is None:
        raise _missing()
    item["verdicts"], item["verdicts_next_cursor"] = await store.list_verdicts(
        conn, principal.project_id, incident_id, None, FIRST_VERDICTS)
    return item


@router.get("/v1/incidents/{incident_id}", response_model=IncidentDetail,
            summary="One incident: its figures, its events (opened, escalated, resolved) and its first "
                    "page of per-session verdicts")
async def get_incident(incident_id: uuid.UUID, principal: ReadKey, conn: ConnectionDep) -> dict:
    return await _detail(conn, principal, incident_id, await store.get_incident(conn, principal.project_id,
                                                                                incident_id))


@router.get("/v1/incidents/{incident_id}/verdicts", response_model=IncidentVerdictPage,
            summary="The incident's per-session verdicts, newest session first")
async def list_incident_verdicts(incident_id: uuid.UUID, principal: ReadKey, conn: ConnectionDep,
                                 limit: LimitQuery = 100, cursor: CursorQuery = None) -> dict:
    if await store.get_incident(conn, principal.project_id, incident_id) is None:
        raise _missing()
    items, next_cursor = await store.list_verdicts(conn, principal.project_id, incident_id,
                                                   decode_cursor(cursor), limit)
    return {"verdicts": items, "next_cursor": next_cursor}


@router.post("/v1/incidents/{incident_id}/acknowledge", response_model=IncidentDetail,
             summary="Acknowledge the incident (someone is on it); the first acknowledgement stands")
async def acknowledge_incident(incident_id: uuid.UUID, principal: AdminKey, conn: ConnectionDep) -> dict:
    item = await store.acknowledge(conn, principal.project_id, incident_id, principal.key_id)
    return await _detail(conn, principal, incident_id, item)


@router.post("/v1/incidents/{incident_id}/resolve", response_model=IncidentDetail,
             summary="Resolve the open incident by hand",
             description="Its `resolved` event is recorded and, where its opening paged, alerted. Resolving a "
                         "resolved incident changes nothing; a pending one (it paged nobody) is refused with 409. "
                         "A later verdict of the same agent and kind starts a new incident.")
async def resolve_incident(incident_id: uuid.UUID, principal: AdminKey, conn: ConnectionDep) -> dict:
    try:
        item = await store.resolve(conn, principal.project_id, incident_id, principal.key_id)
    except store.NotOpen as exc:
        raise HTTPException(409, str(exc)) from None
    return await _detail(conn, principal, incident_id, item)


class AlertRouteBody(ApiModel):
    webhook_url: HttpUrl = Field(description="a Slack-compatible incoming webhook")
    min_severity: Severity = Field(default="critical", description="openings and escalations below it are not sent")


@router.get("/v1/alert-route", response_model=AlertRoute,
            summary="Where the project's incident alerts go (404: to the platform's default webhook)")
async def get_alert_route(principal: AdminKey, conn: ConnectionDep) -> dict:
    route = await alert_routes.get_route_async(conn, principal.project_id)
    if route is None:
        raise HTTPException(404, "this project has no route of its own: its alerts go to the platform's default")
    return route


@router.put("/v1/alert-route", response_model=AlertRoute,
            summary="Send the project's incident alerts to its own webhook, from a minimum severity on",
            description="Alerts still waiting go to the new webhook; a pause of the old one is lifted.")
async def put_alert_route(body: AlertRouteBody, principal: AdminKey, conn: ConnectionDep) -> dict:
    return await alert_routes.set_route_async(conn, principal.project_id, str(body.webhook_url), body.min_severity)


@router.delete("/v1/alert-route", status_code=204,
               summary="The project's incident alerts go to the platform's default webhook again")
async def delete_alert_route(principal: AdminKey, conn: ConnectionDep) -> Response:
    if not await alert_routes.remove_route_async(conn, principal.project_id):
        raise HTTPException(404, "this project has no route of its own")
    return Response(status_code=204)
