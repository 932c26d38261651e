"""Assets: every dbt model (tests as asset checks), detection per day, alert delivery.
Thin wiring: the work is in orchestration.dbt and orchestration.detection."""

import json
import os
from datetime import timedelta

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    asset,
    multi_asset,
)
from dagster_dbt import DbtCliResource, dbt_assets, get_asset_key_for_model

from orchestration import watermark
from orchestration.dbt import build_vars, ensure_manifest, prepare_marts
from orchestration.detection.alerts import deliver_alerts
from orchestration.detection.detect import Built, detect_days
from orchestration.partitions import daily
from orchestration.resources import BagulaDatabase
from orchestration.settings import get_orchestration_settings


@dbt_assets(manifest=ensure_manifest())
def bagula_dbt_models(context: AssetExecutionContext, dbt: DbtCliResource, database: BagulaDatabase):
    """`dbt build` of the selected models: incremental up to the run's watermark."""
    os.environ.update(database.dbt_env())
    if not prepare_marts(database.database_url):
        raise Failure("dbt run --empty failed: the marts could not be created")
    upto = context.run.tags.get(watermark.RUN_TAG)
    build = build_vars(database.database_url, int(upto) if upto else None)
    yield from dbt.cli(["build", "--vars", json.dumps(build)], context=context).stream()


MART_DEPS = [get_asset_key_for_model([bagula_dbt_models], model)
             for model in ("fct_sessions", "fct_llm_calls", "fct_tool_calls", "detection_sessions")]
ANOMALIES = AssetKey(["detection", "anomalies"])
REGRESSIONS = AssetKey(["detection", "regressions"])


def _built(tags: dict[str, str]) -> Built | None:
    """What a run launched for new data judges: the rows its build wrote. None for a
    backfill or a rerun (no tags): whole days, keeping what is already judged."""
    if watermark.RUN_TAG not in tags:
        return None
    return Built(after=int(tags.get(watermark.PREVIOUS_RUN_TAG, 0)), upto=int(tags[watermark.RUN_TAG]))


@multi_asset(
    specs=[
        AssetSpec(ANOMALIES, deps=MART_DEPS, group_name="detection",
                  description="Anomaly verdicts (rules, IsolationForest, failure modes) of the day's sessions."),
        AssetSpec(REGRESSIONS, deps=MART_DEPS, group_name="detection",
                  description="Regressions of the day's sessions against each agent's baseline."),
    ],
    partitions_def=daily,
    # A backfill of many days is one run: the history frame is read once.
    backfill_policy=BackfillPolicy.single_run(),
)
def detection(context: AssetExecutionContext, database: BagulaDatabase):
    window = context.partition_time_window
    days = []
    day = window.start
    while day < window.end:
        days.append(day.date())
        day += timedelta(days=1)
    with database.connect() as conn:
        summary = detect_days(conn, days, built=_built(context.run.tags), log=context.log.info)
    metadata = summary.as_metadata()
    yield MaterializeResult(asset_key=ANOMALIES, metadata={
        k: v for k, v in metadata.items() if not k.startswith("new_regressions")})
    yield MaterializeResult(asset_key=REGRESSIONS, metadata={
        k: v for k, v in metadata.items() if not k.startswith("new_anomalies")})


@asset(key=AssetKey(["detection", "alert_deliveries"]), deps=[ANOMALIES, REGRESSIONS], group_name="detection",
       description="Critical verdicts posted to the webhook (BAGULA_ALERT_WEBHOOK_URL), once each.")
def alert_deliveries(context: AssetExecutionContext, database: BagulaDatabase) -> MaterializeResult:
    with database.connect() as conn:
        outcome = deliver_alerts(conn, get_orchestration_settings())
    if not outcome["webhook"] and outcome["pending"]:
        context.log.warning(f"{outcome['pending']} alerts pending: BAGULA_ALERT_WEBHOOK_URL is not set")
    if outcome["failed"]:
        context.log.warning(f"alert delivery failed; {outcome['pending']} pending, retried by the next run")
    return MaterializeResult(metadata=outcome)
