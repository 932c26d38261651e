"""Assets: every dbt model (tests as asset checks), detection per day, alert delivery.
Thin wiring: the work is in orchestration.dbt and orchestration.detection."""

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
from orchestration.dbt import ensure_manifest, prepare_marts
from orchestration.detection.alerts import deliver_alerts
from orchestration.detection.detect import detect_days, judge_new
from orchestration.partitions import daily
from orchestration.resources import BagulaDatabase
from orchestration.settings import get_orchestration_settings


@dbt_assets(manifest=ensure_manifest())
def bagula_dbt_models(context: AssetExecutionContext, dbt: DbtCliResource, database: BagulaDatabase):
    """`dbt build` of the selected models: incremental up to the run's watermark. When it fails,
    the batches whose rows it cannot take are quarantined and the rest is built (quarantine.py)."""
    if not context.selected_asset_keys:
        # Only the tests (the hourly schedule): they read, so the live path may go on building.
        yield from _build(context, dbt, database)
        return
    with database.connect() as lock, watermark.pipeline_lock(lock):
        yield from _build(context, dbt, database)


def _build(context: AssetExecutionContext, dbt: DbtCliResource, database: BagulaDatabase):
    if not prepare_marts(database.database_url):
        raise Failure("dbt run --empty failed: the marts could not be created")
    upto = context.run.tags.get(watermark.RUN_TAG)
    with database.connect() as conn:
        bound = int(upto) if upto else watermark.current(conn)
    # The bound as a connection setting, not a dbt variable: a changed variable makes dbt
    # re-parse the whole project, seconds on every run. Without variables the tests (the
    # hourly schedule's) check whole tables.
    os.environ.update(watermark.bounded_env(database.dbt_env(), bound))
    args = ["build"]
    invocation = dbt.cli(args, context=context, raise_on_error=False)
    # Held back until the build is known to have succeeded: after a quarantine the build is
    # repeated, and only that build's events may reach Dagster (each model once).
    events = list(invocation.stream())
    if invocation.is_successful():
        yield from events
        return
    error = str(invocation.get_error())
    try:
        found = quarantine.isolate(database.database_url, bound, quarantine.dbt_probes(database.database_url))
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
    minimum = get_orchestration_settings().alert_min_severity
    with database.connect() as conn, watermark.pipeline_lock(conn):
        if watermark.RUN_TAG in context.run.tags:
            # A run for new data: every session the marts wrote since detection's watermark
            # (so a run that failed is caught up by the next).
            summary = judge_new(conn, days, log=context.log.info, alert_min_severity=minimum)
        else:
            # A backfill or a rerun from the UI: whole days, keeping what is already judged.
            summary = detect_days(conn, days, log=context.log.info, alert_min_severity=minimum)
    metadata = summary.as_metadata()
    yield MaterializeResult(asset_key=ANOMALIES, metadata={
        k: v for k, v in metadata.items() if not k.startswith("new_regressions")})
    yield MaterializeResult(asset_key=REGRESSIONS, metadata={
        k: v for k, v in metadata.items() if not k.startswith("new_anomalies")})


@asset(key=AssetKey(["detection", "alert_deliveries"]), deps=[ANOMALIES, REGRESSIONS], group_name="detection",
       description="Incident events posted to their project's webhook (or BAGULA_ALERT_WEBHOOK_URL), once each.")
def alert_deliveries(context: AssetExecutionContext, database: BagulaDatabase) -> MaterializeResult:
    with database.connect() as conn:
        outcome = deliver_alerts(conn, get_orchestration_settings())
    if outcome["paused"]:
        context.log.error(f"alert delivery paused: {outcome['paused']}; fix the webhook, then `bagula alerts requeue`")
    if outcome["failed"]:
        context.log.warning(f"alert delivery failed; {outcome['pending']} pending, retried by the next run")
    return MaterializeResult(metadata=outcome)
