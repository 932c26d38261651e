"""The new-sessions sensor, evaluated with Dagster's test APIs against a real database."""

from __future__ import annotations

import json
import random
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunRequest, build_sensor_context
from dagster._core.test_utils import create_run_for_test

from ingest_api import db
from orchestration import watermark
from orchestration.dbt import PROJECT
from orchestration.definitions import defs
from orchestration.resources import BagulaDatabase
from orchestration.watermark import PREVIOUS_RUN_TAG, RUN_TAG
from simulator.samples import make_batch
from tests.support.services import ApiServer, new_tenant

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@pytest.fixture(scope="module")
def setup(pg):
    url = pg.create_database(f"sensor_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    api = ApiServer(url).start()
    tenant = new_tenant(api, url)
    yield url, tenant
    tenant.client.close()
    api.stop()


def send_on(tenant, day: date, count: int, seed: int) -> list[str]:
    sessions = make_batch(random.Random(seed), count)
    base = datetime(day.year, day.month, day.day, 9, tzinfo=timezone.utc).timestamp() * 1000
    for i, session in enumerate(sessions):
        shift = base + i * 60_000 - session["startTime"]
        session["startTime"] += shift
        session["endTime"] += shift
        for turn in session["turns"]:
            turn["timestamp"] += shift
    response = tenant.client.post("/v1/sessions/ingest", json={"sessions": sessions})
    assert response.status_code == 200 and response.json()["stored"] == count, response.text
    return [s["sessionId"] for s in sessions]


def evaluate(url: str, cursor: str | None, instance: DagsterInstance | None = None):
    sensor = defs.resolve_sensor_def("new_sessions")
    context = build_sensor_context(instance=instance or DagsterInstance.ephemeral(), cursor=cursor,
                                   resources={"database": BagulaDatabase(database_url=url)})
    return sensor(context)


def run(request: RunRequest, url: str, only_marts: bool = False):
    """What the daemon would launch for the request, in this process (only_marts: the run
    failed after its dbt build, before detection)."""
    from orchestration.pipeline import run_pipeline

    with pytest.MonkeyPatch.context() as env:
        env.setenv("BAGULA_DATABASE_URL", url)
        if only_marts:
            from dagster import AssetSelection, materialize

            from orchestration.pipeline import ASSETS, bagula_dbt_models
            from orchestration.resources import resources
            result = materialize(ASSETS, resources=resources(), tags=request.tags,
                                 selection=AssetSelection.assets(bagula_dbt_models) - AssetSelection.all_asset_checks())
        else:
            result = run_pipeline(request.tags, quiet=True)
    assert result.success


def judged_watermark(url: str) -> int:
    with psycopg.connect(url) as conn:
        return watermark.judged(conn)


def test_sensor_requests_the_work_due_and_nothing_once_it_is_done(setup):
    url, tenant = setup
    send_on(tenant, date(2026, 3, 2), 3, seed=1)
    send_on(tenant, date(2026, 3, 4), 2, seed=2)
    first = evaluate(url, None)
    [request] = first.run_requests
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2026-03-02", "2026-03-04")
    assert request.tags[PREVIOUS_RUN_TAG] == "0"
    assert request.tags[RUN_TAG] == first.cursor
    assert request.run_key is None  # what is due is read from the database, never deduplicated away

    run(request, url)
    quiet = evaluate(url, first.cursor)
    assert quiet.run_requests == [] and quiet.skip_reason is not None
    assert judged_watermark(url) >= int(request.tags[RUN_TAG])

    send_on(tenant, date(2026, 3, 3), 1, seed=3)
    second = evaluate(url, quiet.cursor)
    [request] = second.run_requests
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2026-03-03", "2026-03-03")
    assert int(request.tags[PREVIOUS_RUN_TAG]) >= int(first.cursor)
    assert int(second.cursor) > int(quiet.cursor)
    run(request, url)


def test_a_run_that_failed_after_its_build_is_caught_up_by_the_next(setup):
    """The marts were built but detection never ran (the run died): nothing new arrives, yet
    the sensor asks for a run, and it judges the sessions the failed run left unjudged."""
    url, tenant = setup
    sent = send_on(tenant, date(2026, 3, 12), 2, seed=6)
    [request] = evaluate(url, None).run_requests
    run(request, url, only_marts=True)
    before = judged_watermark(url)
    [catch_up] = evaluate(url, request.tags[RUN_TAG]).run_requests
    assert catch_up.tags[RANGE_START] <= "2026-03-12" <= catch_up.tags[RANGE_END]
    run(catch_up, url)
    assert judged_watermark(url) > before
    assert evaluate(url, catch_up.tags[RUN_TAG]).run_requests == []
    with psycopg.connect(url) as conn:
        judged = conn.execute("select count(*) from marts.fct_sessions where session_id = any(%s::uuid[])"
                              " and watermark <= %s", (sent, judged_watermark(url))).fetchone()[0]
    assert judged == 2


def test_after_a_failed_run_the_sensor_backs_off(setup):
    url, tenant = setup
    instance = DagsterInstance.ephemeral()
    failed = create_run_for_test(instance, job_name="__anonymous_asset_job_new_sessions",
                                 status=DagsterRunStatus.STARTED, tags={"dagster/sensor_name": "new_sessions"})
    instance.report_run_failed(failed)
    send_on(tenant, date(2026, 3, 14), 1, seed=7)
    waiting = evaluate(url, None, instance)
    assert waiting.run_requests == [] and "failed; retrying in" in waiting.skip_reason.skip_message


def test_a_batch_committed_late_is_picked_up_by_a_later_tick(setup):
    url, tenant = setup
    # Sessions on both days first: on TimescaleDB, an open transaction that created a chunk
    # would hold back another insert's chunk creation (not what this test is about).
    send_on(tenant, date(2026, 3, 8), 1, seed=40)
    send_on(tenant, date(2026, 3, 9), 1, seed=41)
    cursor = evaluate(url, None).cursor
    # A batch whose transaction started before the tick but commits after it.
    late = psycopg.connect(url)
    late_txid = late.execute("select txid_current()").fetchone()[0]
    late.execute(
        "insert into agent_sessions (project_id, session_id, api_key_id, agent_name, start_time, end_time,"
        " initial_request) values (%s, gen_random_uuid(), %s, 'late-agent', '2026-03-09T10:00:00Z',"
        " '2026-03-09T10:01:00Z', 'hello')",
        (tenant.project_id, tenant.key_id),
    )
    send_on(tenant, date(2026, 3, 8), 1, seed=4)
    meanwhile = evaluate(url, cursor)
    [request] = meanwhile.run_requests
    # Not committed yet: not visible (the run reads up to a watermark below it), not skipped either.
    assert int(request.tags[RUN_TAG]) <= late_txid
    late.commit()
    late.close()
    later = evaluate(url, meanwhile.cursor)
    [request] = later.run_requests
    assert request.tags[RANGE_END] >= "2026-03-09" >= request.tags[RANGE_START]
    assert int(request.tags[RUN_TAG]) > late_txid


def test_sensor_waits_while_its_previous_run_is_in_flight(setup):
    url, tenant = setup
    instance = DagsterInstance.ephemeral()
    cursor = evaluate(url, None, instance).cursor
    create_run_for_test(instance, job_name="__anonymous_asset_job_new_sessions", status=DagsterRunStatus.STARTED,
                        tags={"dagster/sensor_name": "new_sessions"})
    send_on(tenant, date(2026, 3, 10), 1, seed=5)
    waiting = evaluate(url, cursor, instance)
    assert waiting.run_requests == [] and waiting.cursor == cursor


def test_sensor_stands_aside_while_the_live_path_keeps_up_and_takes_over_when_it_stops(setup):
    from orchestration.sensors import plan_run

    url, tenant = setup
    send_on(tenant, date(2026, 3, 20), 1, seed=9)
    database = BagulaDatabase(database_url=url)
    with psycopg.connect(url, autocommit=True) as conn:
        watermark.beat(conn, watermark.LIVE)
    request, _, why = plan_run(database, 0, live_grace_s=30)
    assert request is None and "live path keeps up" in why
    # The live process died: once its heartbeat is older than the grace, the sensor's runs take over.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("update pipeline_watermarks set updated_at = now() - interval '31 seconds' where name = %s",
                     (watermark.LIVE,))
    request, _, _ = plan_run(database, 0, live_grace_s=30)
    assert request is not None and request.tags[RANGE_START] <= "2026-03-20" <= request.tags[RANGE_END]
    run(request, url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("delete from pipeline_watermarks where name = %s", (watermark.LIVE,))


def test_pending_alerts_sensor_retries_only_when_a_webhook_is_set_and_alerts_wait(setup, monkeypatch):
    from orchestration.settings import get_orchestration_settings

    url, tenant = setup
    sensor = defs.resolve_sensor_def("pending_alerts")

    def evaluate_alerts():
        get_orchestration_settings.cache_clear()
        context = build_sensor_context(instance=DagsterInstance.ephemeral(),
                                       resources={"database": BagulaDatabase(database_url=url)})
        return sensor(context)

    monkeypatch.delenv("BAGULA_ALERT_WEBHOOK_URL", raising=False)
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into alerts (project_id, source, source_id, agent_name, session_id, severity, payload)"
            " values (%s, 'anomaly', gen_random_uuid(), 'a', gen_random_uuid(), 'critical', '{\"text\": \"x\"}')",
            (tenant.project_id,),
        )
    try:
        assert "BAGULA_ALERT_WEBHOOK_URL" in evaluate_alerts().skip_message
        monkeypatch.setenv("BAGULA_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
        request = evaluate_alerts()
        assert isinstance(request, RunRequest) and request.tags["bagula/pending_alerts"] == "1"
        with psycopg.connect(url) as conn:
            conn.execute("update alerts set status = 'delivered'")
        assert evaluate_alerts().skip_message == "no pending alerts"
    finally:
        get_orchestration_settings.cache_clear()


def test_runs_for_new_sessions_build_every_asset_and_leave_dbt_tests_to_the_hourly_schedule():
    graph = defs.resolve_asset_graph()
    [target] = defs.resolve_sensor_def("new_sessions").targets
    sensor_selection = target.resolvable_to_job.selection
    materializable = {key for key in graph.get_all_asset_keys() if graph.get(key).is_materializable}
    assert sensor_selection.resolve(graph) == materializable
    assert sensor_selection.resolve_checks(graph) == set()
    schedule_selection = defs.resolve_schedule_def("marts_tests").target.resolvable_to_job.selection
    assert schedule_selection.resolve_checks(graph) == graph.asset_check_keys
    manifest = json.loads(Path(PROJECT.manifest_path).read_text())
    data_tests = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"]
    assert len(graph.asset_check_keys) == len(data_tests) > 50  # one per dbt data test
