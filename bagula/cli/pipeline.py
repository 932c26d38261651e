"""`bagula pipeline run` and `bagula dagster ...`: marts, detection and alerts in Dagster."""

from __future__ import annotations

import os
from datetime import date

import click

from bagula.cli.common import database_url
from bagula.settings import get_platform_settings
from orchestration import instance


@click.group(name="pipeline", help="Dagster: marts, detection and alerts.")
def pipeline_group() -> None:
    pass


@pipeline_group.command("run", help="""Materialise in this process, at once, what the sensor would launch:
the marts, then detection of the sessions ingested since the marts were last built, then alert delivery.
With --day or --all, judges those whole days instead (a backfill; verdicts already stored are kept).""")
@click.option("--day", "days", multiple=True, help="a UTC day to judge (YYYY-MM-DD), repeatable")
@click.option("--all", "all_days", is_flag=True, help="judge every day that has sessions")
@click.option("--verbose", is_flag=True, help="Dagster's and dbt's own log lines")
def pipeline_run(days: tuple[str, ...], all_days: bool, verbose: bool) -> None:
    from orchestration import pipeline

    url = database_url()
    try:
        chosen = [date.fromisoformat(d) for d in days] if days else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--day") from None
    tags, why = pipeline.plan(url, chosen, all_days=all_days)
    if tags is None:
        pending = pipeline.pending_alerts(url)
        if not pending:
            click.echo(f"nothing to do: {why}")
            return
        why += f"; delivering {pending} pending alerts"
    click.echo(f"pipeline: {why}", err=True)
    result = pipeline.run_pipeline(tags, quiet=not verbose)
    for key, value in pipeline.detection_metadata(result).items():
        click.echo(f"  {key:<28} {value}")
    if not result.success:
        raise click.ClickException("the pipeline failed (rerun with --verbose for Dagster's log)")


@pipeline_group.command("live", help="""The live path: build, judge, group into incidents and alert every new
batch within seconds, in this long-lived process (`bagula run` starts it). Dagster's sensor stands
aside while it keeps up and takes over when it stops or fails; its passes show in Dagster's catalog.""")
def pipeline_live() -> None:
    import logging.config
    import signal
    import threading

    from bagula.observability import log_config
    from orchestration import live
    from orchestration.settings import get_orchestration_settings

    settings = get_orchestration_settings()
    logging.config.dictConfig(log_config(get_platform_settings().log_format))
    url = database_url()
    os.environ.update(dagster_env(url))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    path = live.LivePath(url, settings, report=live.dagster_reporter())
    # Retention in its own thread and connection: at most every BAGULA_RETENTION_EVERY_S.
    from bagula.cli.retention import start_periodic

    start_periodic(url, stop)
    click.echo("live path: following new batches", err=True)
    try:
        path.run_forever(stop, settings.live_poll_s)
    finally:
        path.close()


@click.group(name="dagster", help="Dagster's services on their own (what `bagula run` starts), for deployments "
                                   "that run each service separately.")
def dagster_group() -> None:
    pass


def dagster_env(url: str) -> dict[str, str]:
    return instance.prepare(get_platform_settings().resolved_dagster_home(), url)


def _exec_dagster(command: list[str]) -> None:
    env = {**os.environ, **dagster_env(database_url())}
    os.execvpe(command[0], command, env)


@dagster_group.command("webserver", help="Dagster's UI (instance in BAGULA_DAGSTER_HOME, storage in the database).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="default: BAGULA_DAGSTER_PORT or 3000")
def dagster_webserver(host: str, port: int | None) -> None:
    _exec_dagster(instance.webserver_command(host, port or get_platform_settings().dagster_port))


@dagster_group.command("daemon", help="Dagster's daemon: the sensors, the schedule and the run queue.")
def dagster_daemon() -> None:
    _exec_dagster(instance.daemon_command())


@click.group(name="alerts", help="The alert outbox: delivery state, and resuming after a paused webhook.")
def alerts_group() -> None:
    pass


@alerts_group.command("status", help="Alerts pending, delivered and failed; whether delivery is paused and why.")
def alerts_status() -> None:
    import psycopg

    from orchestration.detection import alerts

    with psycopg.connect(database_url(), autocommit=True) as conn:
        state = alerts.status(conn)
    click.echo(f"pending {state['pending']}, delivered {state['delivered']}, failed {state['failed']}")
    for destination, why in state["paused"].items():
        click.echo(f"delivery to {destination} paused {why}")
    if not state["paused"]:
        click.echo("delivery running")


@alerts_group.command("requeue", help="After fixing the webhook: resume delivery and send the failed alerts again.")
def alerts_requeue() -> None:
    import psycopg

    from orchestration.detection import alerts

    with psycopg.connect(database_url(), autocommit=True) as conn:
        count = alerts.requeue(conn)
    click.echo(f"delivery resumed; {count} failed alert(s) pending again (sent by the next run)")


@alerts_group.group("route", help="Where a project's incident alerts go, and from which severity on.")
def route_group() -> None:
    pass


@route_group.command("set", help="Send the project's incident alerts to WEBHOOK (Slack-compatible).")
@click.option("--project", required=True)
@click.option("--webhook", required=True, help="the incoming webhook's URL (a secret: kept in the database)")
@click.option("--min-severity", type=click.Choice(["minor", "major", "critical"]), default="critical",
              show_default=True)
def route_set(project: str, webhook: str, min_severity: str) -> None:
    import psycopg

    from ingest_api.store import alert_routes, keys

    if not webhook.startswith(("https://", "http://")):
        raise click.BadParameter("the webhook must be an http(s) URL", param_hint="--webhook")
    with psycopg.connect(database_url(), autocommit=True) as conn:
        project_id = keys.project_id(conn, project)
        if project_id is None:
            raise click.ClickException(f"no project named {project!r}")
        alert_routes.set_route(conn, project_id, webhook, min_severity)
    click.echo(f"incident alerts of {project!r} from {min_severity} on go to its own webhook")


@route_group.command("remove", help="The project's alerts go to the default webhook again.")
@click.option("--project", required=True)
def route_remove(project: str) -> None:
    import psycopg

    from ingest_api.store import alert_routes, keys

    with psycopg.connect(database_url(), autocommit=True) as conn:
        project_id = keys.project_id(conn, project)
        if project_id is None or not alert_routes.remove_route(conn, project_id):
            raise click.ClickException(f"project {project!r} has no route of its own")
    click.echo(f"incident alerts of {project!r} go to the default webhook (BAGULA_ALERT_WEBHOOK_URL)")


@click.group(name="quarantine", help="Ingest batches set aside because the marts could not build them.")
def quarantine_group() -> None:
    pass


@quarantine_group.command("list", help="Quarantined batches (with --all, released ones too).")
@click.option("--all", "include_released", is_flag=True)
def quarantine_list(include_released: bool) -> None:
    import psycopg

    from orchestration import quarantine

    with psycopg.connect(database_url()) as conn:
        found = quarantine.listed(conn, include_released)
    if not found:
        click.echo("nothing quarantined")
    for q in found:
        state = f"released {q['released_at']:%Y-%m-%d %H:%M}" if q["released_at"] else "held"
        click.echo(f"{q['ingest_txid']}  {q['sessions']} session(s)  projects {', '.join(q['project_ids'])}  "
                   f"{q['quarantined_at']:%Y-%m-%d %H:%M}  {state}\n    {q['reason']}")


@quarantine_group.command("release", help="Let the next build take a quarantined batch again (once the cause is fixed).")
@click.argument("txid", type=int)
def quarantine_release(txid: int) -> None:
    import psycopg

    from orchestration import quarantine

    with psycopg.connect(database_url()) as conn:
        released = quarantine.release(conn, txid)
    if not released:
        raise click.ClickException(f"no batch {txid} is quarantined")
    click.echo(f"released {released} session(s); the next run builds them into the marts")
