"""Sensors: newly ingested sessions (by the ingest watermark), undelivered alerts; the
hourly schedule of dbt's tests."""

from datetime import date, datetime, timezone

import psycopg
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from orchestration import watermark
from orchestration.detection import alerts
from orchestration.partitions import clip_days
from orchestration.resources import BagulaDatabase
from orchestration.settings import get_orchestration_settings

NEW_SESSIONS = "new_sessions"
# What a run for new sessions materialises: every asset, none of the dbt tests.
RUN_SELECTION = AssetSelection.all() - AssetSelection.all_asset_checks()
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
             DagsterRunStatus.STARTED]
# After a failed run the sensor waits before trying again: 10 s, doubling, at most 5 minutes.
RETRY_BACKOFF_S = (10, 300)


def _busy(context: SensorEvaluationContext, sensor_name: str) -> bool:
    runs = context.instance.get_runs(
        filters=RunsFilter(statuses=IN_FLIGHT, tags={"dagster/sensor_name": sensor_name}), limit=1)
    return bool(runs)


def _backing_off(context: SensorEvaluationContext) -> str | None:
    """Why to wait after failed runs of this sensor (None: go ahead)."""
    records = context.instance.get_run_records(
        filters=RunsFilter(tags={"dagster/sensor_name": NEW_SESSIONS}), limit=8)
    failures = 0
    for record in records:
        if record.dagster_run.status != DagsterRunStatus.FAILURE:
            break
        failures += 1
    if not failures or records[0].end_time is None:
        return None
    wait = min(RETRY_BACKOFF_S[1], RETRY_BACKOFF_S[0] * 2 ** (failures - 1))
    left = records[0].end_time + wait - datetime.now(timezone.utc).timestamp()
    return f"the last {failures} run(s) failed; retrying in {left:.0f} s" if left > 0 else None


def next_run(conn: psycopg.Connection, today: date | None = None) -> tuple[dict[str, str] | None, int, str]:
    """Tags of the run that brings the marts and detection up to the current watermark, the
    watermark, and why. Work is due when sessions were ingested since the marts' watermark,
    or when detection has judged less than the marts hold (a run that failed is caught up)."""
    upto, built, judged = watermark.current(conn), watermark.of_marts(conn), watermark.judged(conn)
    if not watermark.pending_raw(conn, built, upto) and judged >= built:
        return None, upto, "no new sessions"
    # Days of every session not judged yet: ingested since detection's watermark.
    days = watermark.touched_days(conn, min(built, judged), upto)
    inside, outside = clip_days(days, today or datetime.now(timezone.utc).date())
    note = f"; sessions on {len(outside)} day(s) outside the detection partitions" if outside else ""
    if not inside:
        return None, upto, "new sessions only outside the detection partitions" + note
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: min(inside).isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: max(inside).isoformat(),
        watermark.RUN_TAG: str(upto),
        watermark.PREVIOUS_RUN_TAG: str(built),
    }
    return tags, upto, f"sessions on {len(inside)} day(s) {min(inside)}..{max(inside)}" + note


def plan_run(database: BagulaDatabase, cursor: int, today: date | None = None,
             live_grace_s: float | None = None) -> tuple[RunRequest | None, int, str]:
    """The run for the work due (see next_run), the new cursor (the watermark last requested), and
    why. None while the live path's heartbeat is younger than ``live_grace_s``: it does the work."""
    with database.connect() as conn:
        age = watermark.seconds_since_beat(conn, watermark.LIVE) if live_grace_s else None
        if age is not None and age < live_grace_s:
            return None, cursor, f"the live path keeps up (its last pass {age:.0f} s ago)"
        tags, upto, why = next_run(conn, today)
    if tags is None:
        return None, max(cursor, upto), why
    # No run_key: what is due is read from the database on every tick, so a failed run's work
    # is asked for again (after the backoff) instead of being deduplicated away.
    return RunRequest(tags=tags), upto, why


def new_sessions_sensor_fn(context: SensorEvaluationContext, database: BagulaDatabase) -> SensorResult:
    """One run of the marts and detection per batch of newly committed sessions.

    What is due comes from the database: raw rows below the current watermark that the marts
    have not read, sessions the marts hold that detection has not judged. So nothing is
    skipped (a batch that commits late stays above the watermark until it is visible) and a
    failed run's batch is taken again by the next one. One run at a time; after failures the
    sensor backs off. The cursor records the watermark last requested, for the UI.
    """
    cursor = int(context.cursor) if context.cursor else 0
    if _busy(context, NEW_SESSIONS):
        return SensorResult(skip_reason=SkipReason("previous run still in flight"), cursor=str(cursor))
    waiting = _backing_off(context)
    if waiting:
        return SensorResult(skip_reason=SkipReason(waiting), cursor=str(cursor))
    request, new_cursor, why = plan_run(database, cursor, live_grace_s=get_orchestration_settings().live_grace_s)
    if request is None:
        return SensorResult(skip_reason=SkipReason(why), cursor=str(new_cursor))
    context.log.info(why)
    return SensorResult(run_requests=[request], cursor=str(new_cursor))


def make_schedules(dbt_models) -> list:
    """dbt's tests over the whole marts (the sensor's runs leave them out)."""
    return [ScheduleDefinition(
        name="marts_tests", cron_schedule="7 * * * *", execution_timezone="UTC",
        target=AssetSelection.checks_for_assets(dbt_models),
        default_status=DefaultScheduleStatus.RUNNING, description="Every dbt data test, hourly.",
    )]


def make_sensors(interval_s: int) -> list:
    new_sessions = sensor(
        name=NEW_SESSIONS, minimum_interval_seconds=interval_s, default_status=DefaultSensorStatus.RUNNING,
        # The models without their dbt tests: the tests run hourly (schedule marts_tests), which
        # keeps a batch's path from ingest to verdict well under a minute.
        target=RUN_SELECTION, description="Newly ingested sessions -> marts, detection and alerts.",
    )(new_sessions_sensor_fn)

    @sensor(name="pending_alerts", minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
            target=AssetSelection.assets(AssetKey(["detection", "alert_deliveries"])),
            description="Retries alerts still undelivered (a webhook down at the time).")
    def pending_alerts(context: SensorEvaluationContext, database: BagulaDatabase):
        if _busy(context, NEW_SESSIONS) or _busy(context, "pending_alerts"):
            return SkipReason("a run is in flight")
        with database.connect() as conn:
            reachable = [d for d in alerts.destinations(conn, get_orchestration_settings().alert_webhook_url)
                         if not alerts.delivery_paused(conn, d)]
            pending = alerts.pending_alert_count(conn, reachable)
        if not reachable:
            return SkipReason("no webhook to deliver to (BAGULA_ALERT_WEBHOOK_URL unset, no project route, "
                              "or every one paused: fix it, then `bagula alerts requeue`)")
        if not pending:
            return SkipReason("no pending alerts")
        return RunRequest(run_key=None, tags={"bagula/pending_alerts": str(pending)})

    return [new_sessions, pending_alerts]
