"""The project's data policy: how long its data is kept, and which ready redactors the API
applies to everything it stores (docs/privacy.md)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import Field

from ingest_api.deps import AdminKey, ConnectionDep, ReadKey, SettingsDep
from ingest_api.schemas import ApiModel
from ingest_api.store import retention as store

router = APIRouter(tags=["privacy"])

Redactor = Literal[store.REDACTOR_NAMES]  # type: ignore[valid-type]
Retained = Literal["raw", "marts", "verdicts"]


class DataPolicy(ApiModel):
    project: str
    raw_days: int = Field(
        description="days raw payloads are kept: sessions, turns, calls, spans, the search index and session details"
    )
    marts_days: int = Field(description="days the marts' figures are kept (facts and aggregates)")
    verdicts_days: int = Field(description="days verdicts, closed incidents, sent alerts and models are kept")
    defaults: list[Retained] = Field(description="which of the three are the platform's default")
    redactors: list[Redactor] = Field(description="ready redactors applied to every session and span before storage")


# A century: longer is "forever", and the cutoff it makes must stay a valid timestamp.
MAX_DAYS = 36500


class DataPolicyChange(ApiModel):
    raw_days: int | None = Field(default=None, ge=1, le=MAX_DAYS, description="null: the platform default")
    marts_days: int | None = Field(default=None, ge=1, le=MAX_DAYS, description="null: the platform default")
    verdicts_days: int | None = Field(default=None, ge=1, le=MAX_DAYS, description="null: the platform default")
    redactors: list[Redactor] | None = Field(default=None, description="[] or null: none")


@router.get(
    "/v1/data-policy",
    response_model=DataPolicy,
    summary="How long the project's data is kept, and what the API redacts before storing it",
)
async def get_data_policy(principal: ReadKey, conn: ConnectionDep, settings: SettingsDep) -> dict:
    return (await store.policy_async(conn, store.defaults_of(settings), principal.project_id)).as_dict()


@router.put(
    "/v1/data-policy",
    response_model=DataPolicy,
    summary="Change the project's retention or redaction (fields left out keep their value)",
    description="Retention applies from the next run (hourly by default). Redaction applies to what is "
    "stored from now on, within BAGULA_AUTH_CACHE_S; it does not rewrite stored data.",
)
async def put_data_policy(
    body: DataPolicyChange, principal: AdminKey, conn: ConnectionDep, settings: SettingsDep
) -> dict:
    sent = {name: getattr(body, name) for name in body.model_fields_set}
    if not sent:
        raise HTTPException(422, "nothing to change: send rawDays, martsDays, verdictsDays or redactors")
    await store.set_policy_async(conn, principal.project_id, **sent)
    return (await store.policy_async(conn, store.defaults_of(settings), principal.project_id)).as_dict()
