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
    click.echo(f"delivery paused {state['paused']}" if state["paused"] else "delivery running")


@alerts_group.command("requeue", help="After fixing the webhook: resume delivery and send the failed alerts again.")
def alerts_requeue() -> None:
    import psycopg

    from orchestration.detection import alerts

    with psycopg.connect(database_url(), autocommit=True) as conn:
        count = alerts.requeue(conn)
    click.echo(f"delivery resumed; {count} failed alert(s) pending again (sent by the next run)")


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
