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

from orchestration import quarantine, watermark
from orchestration.dbt import build_vars, ensure_manifest, prepare_marts
from orchestration.detection.alerts import deliver_alerts
from orchestration.detection.detect import Built, detect_days
from orchestration.partitions import daily
from orchestration.resources import BagulaDatabase
from orchestration.settings import get_orchestration_settings


@dbt_assets(manifest=ensure_manifest())
def bagula_dbt_models(context: AssetExecutionContext, dbt: DbtCliResource, database: BagulaDatabase):
    """`dbt build` of the selected models: incremental up to the run's watermark. When it fails,
    the batches whose rows it cannot take are quarantined and the rest is built (quarantine.py)."""
    os.environ.update(database.dbt_env())
    if not prepare_marts(database.database_url):
        raise Failure("dbt run --empty failed: the marts could not be created")
    upto = context.run.tags.get(watermark.RUN_TAG)
    build = build_vars(database.database_url, int(upto) if upto else None)
    args = ["build", "--vars", json.dumps(build)]
    invocation = dbt.cli(args, context=context, raise_on_error=False)
    # Held back until the build is known to have succeeded: after a quarantine the build is
    # repeated, and only that build's events may reach Dagster (each model once).
    events = list(invocation.stream())
    if invocation.is_successful():
        yield from events
        return
    error = str(invocation.get_error())
    try:
        found = quarantine.isolate(database.database_url, build["watermark"],
                                   lambda w: quarantine.dbt_run_up_to(database.database_url, w))
    except quarantine.NotTheData as exc:
        raise Failure(f"dbt build failed, and not because of a batch's rows: {exc}") from None
    if not found:
        raise Failure(f"dbt build failed: {error}")
    # The operator sees the quarantine in this run's log and with `bagula quarantine list`;
    # the marts, detection and alerts go on for everything else.
    context.log.error(f"quarantined {len(found)} ingest batch(es) the marts could not take: "
                      f"{quarantine.summary(found)}; release with `bagula quarantine release TXID` once fixed")
    yield from dbt.cli(args, context=context).stream()


MART_DEPS = [get_asset_key_for_model([bagula_dbt_models], model)
             for model in ("fct_sessions", "fct_llm_calls", "fct_tool_calls", "detection_sessions")]
ANOMALIES = AssetKey(["detection", "anomalies"])
REGRESSIONS = AssetKey(["detection", "regressions"])


def _built(conn, tags: dict[str, str]) -> Built | None:
    """What a run launched for new data judges: every session the marts wrote since detection's
    own watermark (so a run that failed is caught up by the next). None for a backfill or a
    rerun from the UI (no tags): whole days, keeping what is already judged."""
    if watermark.RUN_TAG not in tags:
        return None
    return Built(after=watermark.judged(conn), upto=watermark.of_marts(conn))


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
        built = _built(conn, context.run.tags)
        summary = detect_days(conn, days, built=built, log=context.log.info)
        if built is not None:
            watermark.set_judged(conn, built.upto)
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
