"""Sensors: newly ingested sessions (by the ingest watermark), undelivered alerts; the
hourly schedule of dbt's tests."""


from datetime import datetime, timezone

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


def _busy(context: SensorEvaluationContext, sensor_name: str) -> bool:
    runs = context.instance.get_runs(
        filters=RunsFilter(statuses=IN_FLIGHT, tags={"dagster/sensor_name": sensor_name}), limit=1)
    return bool(runs)


def plan_run(database: BagulaDatabase, cursor: int, today=None) -> tuple[RunRequest | None, int, str]:
    """The run for sessions ingested since ``cursor`` (a watermark), the new cursor, and why."""
    with database.connect() as conn:
        upto = watermark.current(conn)
        if upto <= cursor:
            return None, cursor, "no transaction committed since the last run"
        days = watermark.touched_days(conn, cursor, upto)
    if not days:
        return None, upto, "no new sessions"
    inside, outside = clip_days(days, today or datetime.now(timezone.utc).date())
    note = f"; sessions on {len(outside)} day(s) outside the detection partitions" if outside else ""
    if not inside:
        return None, upto, "new sessions only outside the detection partitions" + note
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: min(inside).isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: max(inside).isoformat(),
        watermark.RUN_TAG: str(upto),
        watermark.PREVIOUS_RUN_TAG: str(cursor),
    }
    request = RunRequest(run_key=f"ingest-{cursor}-{upto}", tags=tags)
    return request, upto, (
        f"sessions on {len(inside)} day(s) {min(inside)}..{max(inside)}" + note)


def new_sessions_sensor_fn(context: SensorEvaluationContext, database: BagulaDatabase) -> SensorResult:
    """One run of the marts and detection per batch of newly committed sessions.

    The cursor is the watermark the last requested run builds up to: rows below it
    are committed, so nothing is skipped; the next run starts there, so nothing is
    judged twice. While a run is in flight the cursor stays put and the
    next run takes everything since (runs never overlap on the marts).
    """
    cursor = int(context.cursor) if context.cursor else 0
    if _busy(context, NEW_SESSIONS):
        return SensorResult(skip_reason=SkipReason("previous run still in flight"), cursor=str(cursor))
    request, new_cursor, why = plan_run(database, cursor)
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
            description="Retries alerts still undelivered (webhook down at the time).")
    def pending_alerts(context: SensorEvaluationContext, database: BagulaDatabase):
        if not get_orchestration_settings().alert_webhook_url:
            return SkipReason("BAGULA_ALERT_WEBHOOK_URL is not set")
        if _busy(context, NEW_SESSIONS) or _busy(context, "pending_alerts"):
            return SkipReason("a run is in flight")
        with database.connect() as conn:
            pending = alerts.pending_alert_count(conn)
        if not pending:
            return SkipReason("no pending alerts")
        return RunRequest(run_key=None, tags={"bagula/pending_alerts": str(pending)})

    return [new_sessions, pending_alerts]
