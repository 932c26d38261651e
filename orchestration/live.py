"""The live path: every newly committed batch through the marts, detection, incidents and
alerts within seconds, in one long-lived process (`bagula pipeline live`; `bagula run`
starts it). docs/architecture.md ("Freshness") says why it exists beside Dagster's runs.

A pass does what a run launched by the sensor does, with the same functions and the same
watermarks, so what it writes is what that run would have written:

1. it takes the pipeline lock, which Dagster's runs take too (one builder of the marts at
   a time: incremental models built twice at once would read the same rows twice);
2. ``sensors.next_run`` decides what is due, from the database's watermarks;
3. ``dbt run`` of the incremental models in this process, the project parsed once at
   start, every connection of the invocation bounded at the same watermark;
4. ``detect.judge_new``: detection of what the marts wrote since detection's watermark,
   then the grouping of new verdicts into incidents, then alert delivery;
5. the materializations are reported to Dagster (runless events, tagged as the live
   path's), so its asset catalog shows them.

Each pass refreshes a heartbeat (``pipeline_watermarks`` 'live'); while it is recent the
sensor launches no runs for new sessions. A pass that fails (a batch the marts cannot take,
the database away) leaves the heartbeat to age: the sensor's runs take over, with their
quarantine and backoff, and the live path tries again after its own backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from orchestration import watermark
from orchestration.dbt import InProcessDbt, prepare_marts
from orchestration.detection.alerts import deliver_alerts
from orchestration.detection.detect import DetectionSummary, judge_new
from orchestration.sensors import next_run
from orchestration.settings import OrchestrationSettings

log = logging.getLogger("bagula.live")

# After a failed pass: wait, doubling, before the next (the sensor takes over meanwhile).
BACKOFF_S = (5.0, 120.0)
INCREMENTAL = "config.materialized:incremental"


@dataclass
class PassOutcome:
    """What one pass did (None from ``LivePath.step`` when nothing was due or the lock was taken)."""

    upto: int
    days: list[date]
    models: list[str]
    detection: DetectionSummary
    seconds: float


def _days(tags: dict[str, str]) -> list[date]:
    first = date.fromisoformat(tags[ASSET_PARTITION_RANGE_START_TAG])
    last = date.fromisoformat(tags[ASSET_PARTITION_RANGE_END_TAG])
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


class LivePath:
    def __init__(self, database_url: str, settings: OrchestrationSettings, dbt: InProcessDbt | None = None,
                 report=None) -> None:
        self.database_url = database_url
        self.settings = settings
        self.dbt = dbt
        self.report = report
        self.conn: psycopg.Connection | None = None

    def _ready(self) -> psycopg.Connection:
        """Connected, the marts created and the project parsed (again after a failure)."""
        if self.conn is not None and not self.conn.closed:
            return self.conn
        if not prepare_marts(self.database_url):
            raise RuntimeError("dbt run --empty failed: the marts could not be created")
        if self.dbt is None:
            self.dbt = InProcessDbt(self.database_url)
            # The views as this version of the project defines them (passes build only the
            # incremental tables); bounded at the marts' own watermark: no new rows are read.
            with psycopg.connect(self.database_url) as conn:
                built = watermark.of_marts(conn)
            self.dbt.run("config.materialized:view", built or None)
        self.conn = psycopg.connect(self.database_url, autocommit=True)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def step(self) -> PassOutcome | None:
        """One pass: build, judge, group and alert what is due; None when nothing was, or when a
        Dagster run holds the pipeline lock (it is doing the same work)."""
        started = time.monotonic()
        conn = self._ready()
        with watermark.pipeline_lock(conn, wait=False) as held:
            if not held:
                return None
            tags, upto, _why = next_run(conn)
            if tags is None:
                watermark.beat(conn, watermark.LIVE)
                return None
            models = self.dbt.run(INCREMENTAL, upto)
            days = _days(tags)
            summary = judge_new(conn, days, alert_min_severity=self.settings.alert_min_severity)
            watermark.beat(conn, watermark.LIVE)
        outcome = PassOutcome(upto, days, models, summary, time.monotonic() - started)
        if summary.incidents.alerts:
            deliver_alerts(conn, self.settings)
        if self.report is not None:
            try:
                self.report(outcome)
            except Exception as exc:  # noqa: BLE001 - the work is done; only Dagster's record lacks it
                log.warning("live pass not recorded in Dagster: %s", exc)
        return outcome

    def run_forever(self, stop: threading.Event, poll_s: float) -> None:
        failures = 0
        while not stop.is_set():
            try:
                outcome = self.step()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the sensor takes over; try again later
                failures += 1
                wait = min(BACKOFF_S[1], BACKOFF_S[0] * 2 ** (failures - 1))
                log.error("live pass failed (%s); Dagster's sensor takes over, next try in %.0f s", exc, wait)
                self.close()  # reconnect for the next pass
                stop.wait(wait)
                continue
            if outcome is not None:
                log.info("live pass: up to watermark %s in %.2f s, %s", outcome.upto, outcome.seconds,
                         outcome.detection.as_metadata())
                continue  # more may have arrived meanwhile
            stop.wait(poll_s)


def dagster_reporter(instance=None):
    """Report each pass's materializations to the Dagster instance (DAGSTER_HOME): the dbt models
    it built and detection's day partitions, with the watermark, marked as the live path's."""
    from dagster import AssetMaterialization, DagsterInstance
    from dagster_dbt import get_asset_key_for_model

    from orchestration.assets import ANOMALIES, REGRESSIONS, bagula_dbt_models

    instance = instance or DagsterInstance.get()

    def report(outcome: PassOutcome) -> None:
        metadata = {"watermark": outcome.upto, "path": "live"}
        events = [AssetMaterialization(get_asset_key_for_model([bagula_dbt_models], model), metadata=metadata,
                                       description="built by the live path")
                  for model in outcome.models]
        judged = {**metadata, **outcome.detection.as_metadata()}
        events += [AssetMaterialization(key, partition=day.isoformat(), metadata=judged,
                                        description="judged by the live path")
                   for day in outcome.days for key in (ANOMALIES, REGRESSIONS)]
        for event in events:
            instance.report_runless_asset_event(event)

    return report
