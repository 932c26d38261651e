"""`bagula retention ...` and `bagula redaction ...`: a project's data policy (docs/privacy.md);
and the periodic retention run that `bagula pipeline live` keeps going."""

from __future__ import annotations

import logging
import threading

import click
import psycopg

from bagula.cli.common import database_url
from ingest_api.settings import get_api_settings
from ingest_api.store import keys
from ingest_api.store import retention as store

log = logging.getLogger("bagula.retention")


def _project(conn: psycopg.Connection, name: str):
    project_id = keys.project_id(conn, name)
    if project_id is None:
        raise click.ClickException(f"no project named {name!r}")
    return project_id


def _show(policy: store.Policy) -> str:
    def days(value: int, cls: str) -> str:
        return f"{value} d" + (" (default)" if cls not in policy.own else "")

    return (
        f"{policy.project_name}: raw payloads {days(policy.raw_days, 'raw')}, "
        f"marts {days(policy.marts_days, 'marts')}, verdicts {days(policy.verdicts_days, 'verdicts')}; "
        f"redaction: {', '.join(policy.redactors) or 'none'}"
    )


@click.group(name="retention", help="How long each project's data is kept (raw payloads, marts, verdicts).")
def retention_group() -> None:
    pass


@retention_group.command("show", help="Every project's retention (or one's), and the last run.")
@click.option("--project", default=None)
def retention_show(project: str | None) -> None:
    defaults = store.defaults_of(get_api_settings())
    with psycopg.connect(database_url(), autocommit=True) as conn:
        found = store.policies(conn, defaults, _project(conn, project) if project else None)
        last = store.last_run(conn)
    for policy in found:
        click.echo(_show(policy))
    click.echo(
        f"default: raw payloads {defaults.raw_days} d, marts {defaults.marts_days} d, "
        f"verdicts {defaults.verdicts_days} d (BAGULA_RETENTION_RAW_DAYS, _MARTS_DAYS, _VERDICTS_DAYS)"
    )
    if last is None:
        click.echo("retention has not run yet")
    else:
        started, finished, deleted = last
        deleted_rows = sum(v for k, v in (deleted or {}).items() if "chunks" not in k)
        click.echo(
            f"last run {started:%Y-%m-%d %H:%M:%S %Z}: "
            + (f"{deleted_rows} rows deleted" if finished else "did not finish")
        )


def _days(text: str | None, name: str):
    if text is None:
        return store.UNSET
    if text == "default":
        return None
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter("a number of days, or 'default'", param_hint=name) from None
    if value < 1:
        raise click.BadParameter("at least 1 day", param_hint=name)
    return value


@retention_group.command("set", help="Set a project's retention, in days ('default': the platform's).")
@click.option("--project", required=True)
@click.option("--raw-days", default=None, help="raw payloads: sessions, calls, spans, search index, details")
@click.option("--marts-days", default=None, help="the marts' figures (facts and aggregates)")
@click.option("--verdicts-days", default=None, help="verdicts, closed incidents, sent alerts, models")
def retention_set(project: str, raw_days: str | None, marts_days: str | None, verdicts_days: str | None) -> None:
    changes = {
        "raw_days": _days(raw_days, "--raw-days"),
        "marts_days": _days(marts_days, "--marts-days"),
        "verdicts_days": _days(verdicts_days, "--verdicts-days"),
    }
    if all(v is store.UNSET for v in changes.values()):
        raise click.UsageError("nothing to set: give --raw-days, --marts-days or --verdicts-days")
    defaults = store.defaults_of(get_api_settings())
    with psycopg.connect(database_url(), autocommit=True) as conn:
        project_id = _project(conn, project)
        store.set_policy(conn, project_id, **changes)
        click.echo(_show(store.policies(conn, defaults, project_id)[0]))


def _report(run: store.RetentionRun) -> None:
    for table, count in sorted(run.rows_deleted.items()):
        if count:
            click.echo(f"  {table:<36} {count}")
    for table in run.uncovered:
        click.echo(f"  marts.{table}: no time column known to retention; kept whole", err=True)


@retention_group.command(
    "apply",
    help="Delete what is past every project's retention now (what the live path "
    "does every BAGULA_RETENTION_EVERY_S); batched, safe beside ingest.",
)
def retention_apply() -> None:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        run = store.apply(conn, store.defaults_of(get_api_settings()))
    if run is None:
        raise click.ClickException("retention is being applied by another process right now")
    click.echo(
        f"retention applied in {run.seconds:.1f} s: {sum(v for k, v in run.rows_deleted.items() if 'chunks' not in k)}"
        " rows deleted"
    )
    _report(run)


def run_periodically(url: str, stop: threading.Event, poll_s: float = 60.0) -> None:
    """Apply retention whenever the last run (by any process) is BAGULA_RETENTION_EVERY_S old,
    checking every ``poll_s``; in its own thread and connection, beside the live path's passes."""
    settings = get_api_settings()
    defaults = store.defaults_of(settings)
    while not stop.is_set():
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                run = store.apply_if_due(conn, defaults, settings.retention_every_s)
            if run is not None:
                log.info(
                    "retention applied in %.1f s: %s", run.seconds, {k: v for k, v in run.rows_deleted.items() if v}
                )
        except Exception as exc:  # noqa: BLE001 - retried at the next poll
            log.error("retention failed (%s); retried in %.0f s", exc, poll_s)
        stop.wait(poll_s)


def start_periodic(url: str, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=run_periodically, args=(url, stop), name="retention", daemon=True)
    thread.start()
    return thread


@click.group(name="redaction", help="Which ready redactors the API applies before storing a project's data.")
def redaction_group() -> None:
    pass


@redaction_group.command("show", help="A project's server-side redaction.")
@click.option("--project", required=True)
def redaction_show(project: str) -> None:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        policy = store.policies(conn, store.defaults_of(get_api_settings()), _project(conn, project))[0]
    click.echo(f"{project}: {', '.join(policy.redactors) or 'no redaction'}")


@redaction_group.command(
    "set",
    help="""Redact these in every session and span of the project before storage
(applies to what arrives from then on, within BAGULA_AUTH_CACHE_S): emails, phone_numbers,
card_numbers, api_keys; 'all' for the four, 'none' to stop.""",
)
@click.option("--project", required=True)
@click.argument("redactors", nargs=-1, required=True)
def redaction_set(project: str, redactors: tuple[str, ...]) -> None:
    chosen = list(store.REDACTOR_NAMES) if redactors == ("all",) else [] if redactors == ("none",) else list(redactors)
    unknown = set(chosen) - set(store.REDACTOR_NAMES)
    if unknown:
        raise click.BadParameter(f"unknown {sorted(unknown)}; choose from {', '.join(store.REDACTOR_NAMES)}, all, none")
    with psycopg.connect(database_url(), autocommit=True) as conn:
        store.set_policy(conn, _project(conn, project), redactors=chosen)
    click.echo(f"{project}: {', '.join(chosen) or 'no redaction'}")
