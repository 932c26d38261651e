"""`bagula pipeline run`: what the sensor would launch, materialised in this process."""

from datetime import date, datetime, timezone

from dagster import DagsterInstance, ExecuteInProcessResult, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from orchestration import watermark
from orchestration.assets import ANOMALIES, REGRESSIONS, alert_deliveries, bagula_dbt_models, detection
from orchestration.detection.alerts import pending_alert_count
from orchestration.partitions import clip_days
from orchestration.resources import BagulaDatabase, resources
from orchestration.sensors import RUN_SELECTION, next_run

ASSETS = [bagula_dbt_models, detection, alert_deliveries]


def plan(database_url: str, days: list[date] | None = None, today: date | None = None,
         all_days: bool = False) -> tuple[dict[str, str] | None, str]:
    """Run tags for ``days`` (or every day with sessions: ``all_days``), a backfill that
    judges whole days; by default what the sensor would launch now (sensors.next_run)."""
    with BagulaDatabase(database_url=database_url).connect() as conn:
        if days is None and not all_days:
            tags, _, why = next_run(conn, today)
            return tags, why
        if all_days:
            days = watermark.session_days(conn)
    tags: dict[str, str] = {}
    inside, outside = clip_days(sorted(days), today or datetime.now(timezone.utc).date())
    if not inside:
        return None, "no sessions to judge" + (f" ({len(outside)} day(s) outside the partitions)" if outside else "")
    tags[ASSET_PARTITION_RANGE_START_TAG] = min(inside).isoformat()
    tags[ASSET_PARTITION_RANGE_END_TAG] = max(inside).isoformat()
    return tags, f"{len(inside)} day(s) {min(inside)}..{max(inside)}"


def pending_alerts(database_url: str) -> int:
    with BagulaDatabase(database_url=database_url).connect() as conn:
        return pending_alert_count(conn)


def run_pipeline(tags: dict[str, str] | None, instance: DagsterInstance | None = None,
                 quiet: bool = False, detection_only: bool = False) -> ExecuteInProcessResult:
    """Everything for ``tags``; with None only alert delivery (what the pending-alerts sensor
    launches); ``detection_only``: the marts as they are (a backfill of detection from the UI)."""
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}} if quiet else None
    # Like the sensor's runs: the models without their dbt tests (the hourly schedule runs those).
    selection = RUN_SELECTION
    if tags is None:
        selection = [alert_deliveries.key]
    elif detection_only:
        selection = [ANOMALIES, REGRESSIONS, alert_deliveries.key]
    return materialize(ASSETS, instance=instance, resources=resources(), tags=tags or {}, raise_on_error=False,
                       run_config=run_config, selection=selection)


def detection_metadata(result: ExecuteInProcessResult) -> dict[str, object]:
    found: dict[str, object] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key in (ANOMALIES, REGRESSIONS, alert_deliveries.key):
            found.update({k: v.value for k, v in materialization.metadata.items()})
    return found
