"""Agent metrics from the marts (as fresh as the last build)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from ingest_api.deps import ConnectionDep, ReadKey
from ingest_api.schemas import AgentMetrics
from ingest_api.store import metrics as metrics_store

router = APIRouter(tags=["metrics"])


@router.get(
    "/v1/agents/{agent_name}/metrics",
    response_model=AgentMetrics,
    summary="Sessions, success rate, cost, latency and satisfaction of an agent over a window",
    description="Computed from the dbt marts over sessions started within the window "
    "(latency is session duration). 503 until the marts have been built.",
)
async def agent_metrics(
    agent_name: str,
    principal: ReadKey,
    conn: ConnectionDep,
    window: Annotated[Literal["1h", "24h", "7d"], Query()] = "24h",
) -> dict:
    try:
        return await metrics_store.agent_metrics(conn, principal.project_id, agent_name, window)
    except metrics_store.MartsMissing:
        raise HTTPException(503, "the marts have not been built yet: run `bagula transform`") from None
