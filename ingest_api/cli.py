"""The ``bagula`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click
import psycopg
import uvicorn

from ingest_api import db
from ingest_api.localdb import LocalDbError, LocalPostgres
from ingest_api.settings import Settings, get_settings
from ingest_api.store import keys
from ingest_api.superset_cli import SupersetError, prepare_superset, superset_group, superset_serve_command
from orchestration import instance

DEFAULT_PROJECT = "default"


def _database_url() -> str:
    try:
        return get_settings().require_database_url()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


def _upgrade(url: str, settings: Settings) -> None:
    db.upgrade(url, settings.timescaledb)
    tables = db.hypertables(url)
    click.echo(f"schema at revision {db.current_revision(url)}", err=True)
    if tables:
        click.echo(f"timescaledb: hypertables {', '.join(tables)}", err=True)
    else:
        click.echo("timescaledb: not installed; plain PostgreSQL tables (no hypertables)", err=True)


@click.group(help="Bagula: observability for AI agents in production.")
def main() -> None:
    pass


@main.group(name="db", help="Database schema.")
def db_group() -> None:
    pass


@db_group.command("upgrade", help="Apply pending migrations (idempotent).")
def db_upgrade() -> None:
    _upgrade(_database_url(), get_settings())


@main.group(name="keys", help="API keys; each key is bound to one project.")
def keys_group() -> None:
    pass


@keys_group.command("create", help="Create a key (the project too, if new). The key is printed once, as the last line.")
@click.option("--project", required=True, help="project name")
def keys_create(project: str) -> None:
    with psycopg.connect(_database_url()) as conn:
        new = keys.create_key(conn, project)
    click.echo(f"created key {new.key_id} for project {new.project_name!r}; it is shown only once:", err=True)
    click.echo(new.secret)


@keys_group.command("revoke", help="Revoke a key, given its id or the key itself.")
@click.argument("key")
def keys_revoke(key: str) -> None:
    with psycopg.connect(_database_url()) as conn:
        count = keys.revoke_key(conn, key)
    if not count:
        raise click.ClickException("no active key matches")
    click.echo(f"revoked {count} key(s)")


@keys_group.command("list", help="List keys (prefixes only; keys themselves are not stored).")
@click.option("--project", default=None)
def keys_list(project: str | None) -> None:
    with psycopg.connect(_database_url()) as conn:
        for key_id, name, prefix, created, revoked in keys.list_keys(conn, project):
            state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
            click.echo(f"{key_id}  {name}  {prefix}…  created {created:%Y-%m-%d %H:%M}  {state}")


def _serve_api(host: str, port: int, workers: int) -> None:
    uvicorn.run(
        "ingest_api.app:create_app", factory=True, host=host, port=port, workers=workers,
        log_level="info", access_log=False,
    )


@main.command("api", help="Serve the HTTP API.")
@click.option("--host", default=None, help="default: BAGULA_API_HOST or 127.0.0.1")
@click.option("--port", type=int, default=None, help="default: BAGULA_API_PORT or 8000")
@click.option("--workers", type=int, default=None, help="server processes; default: BAGULA_API_WORKERS or 2")
def api(host: str | None, port: int | None, workers: int | None) -> None:
    settings = get_settings()
    _database_url()
    _serve_api(host or settings.api_host, port or settings.api_port, workers or settings.api_workers)


@main.command("run", help="Start the platform: database (project-local unless BAGULA_DATABASE_URL is set), schema, first API key, API.")
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--workers", type=int, default=None)
def run(host: str | None, port: int | None, workers: int | None) -> None:
    settings = get_settings()
    local = None
    url = settings.database_url
    if not url:
        local = LocalPostgres(settings.data_dir / "postgres", settings.local_db_port)
        try:
            url = local.ensure()
        except LocalDbError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"project-local PostgreSQL in {local.data_dir} on port {local.port}", err=True)
        # API worker processes read their settings from the environment.
        os.environ["BAGULA_DATABASE_URL"] = url
        get_settings.cache_clear()
    _upgrade(url, settings)

    with psycopg.connect(url) as conn:
        first_key = None if keys.project_has_active_key(conn, DEFAULT_PROJECT) else keys.create_key(conn, DEFAULT_PROJECT)
    host, port = host or settings.api_host, port or settings.api_port
    base = f"http://{host}:{port}"
    lines = [
        "",
        "Bagula is starting:",
        f"  API              {base}",
        f"  API docs         {base}/docs",
        f"  Dagster          http://{host}:{settings.dagster_port}  (marts, detection, alerts on every new batch)",
        f"  database         {url.split('@')[-1]}" + (" (project-local)" if local else ""),
    ]
    if first_key:
        lines.append(f"  API key (project {DEFAULT_PROJECT!r}, shown once): {first_key.secret}")
    else:
        lines.append(f"  API keys: project {DEFAULT_PROJECT!r} has one already; another: bagula keys create --project NAME")
    try:
        lines += prepare_superset(settings, url)
        superset_argv, superset_env = superset_serve_command(settings, url, settings.superset_port)
    except SupersetError as exc:
        if local is not None:
            local.stop()
        raise click.ClickException(f"Superset: {exc}") from None
    click.echo("\n".join(lines) + "\n")
    sys.stdout.flush()
    api_command = [
        sys.executable, "-m", "ingest_api.cli", "api", "--host", host, "--port", str(port),
        "--workers", str(workers or settings.api_workers),
    ]
    # Dagster's sensor builds the marts and runs detection for every new batch.
    dagster_env = {**os.environ, **instance.prepare(settings, url)}
    services = [
        (api_command, None),
        (instance.webserver_command(host, settings.dagster_port), dagster_env),
        (instance.daemon_command(), dagster_env),
        # Superset's secrets go to its own process only.
        (superset_argv, {**os.environ, **superset_env}),
    ]
    try:
        supervise(services)
    finally:
        if local is not None:
            click.echo("stopping the project-local PostgreSQL", err=True)
            local.stop()


@main.command("transform", context_settings={"ignore_unknown_options": True},
              help="Build the marts: `dbt build` with the project's own profile, from BAGULA_DATABASE_URL. "
                   "Extra arguments go to dbt (e.g. --select fct_sessions+).")
@click.option("--full-refresh", is_flag=True, help="rebuild every incremental model from scratch")
@click.option("--every", type=float, default=None, help="keep running: build again every this many seconds")
@click.argument("dbt_args", nargs=-1, type=click.UNPROCESSED)
def transform_command(full_refresh: bool, every: float | None, dbt_args: tuple[str, ...]) -> None:
    from orchestration.dbt import transform

    url = _database_url()
    while True:
        ok = transform(url, *dbt_args, full_refresh=full_refresh)
        if every is None:
            if not ok:
                raise click.ClickException("dbt build failed (see the output above)")
            return
        # Periodic mode keeps going: the next run picks up where this one stopped.
        if not ok:
            click.echo("dbt build failed; retrying at the next interval", err=True)
        full_refresh = False
        time.sleep(every)


@main.command("dbt", context_settings={"ignore_unknown_options": True},
              help="Run any dbt command against BAGULA_DATABASE_URL, e.g. `bagula dbt docs generate`.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
def dbt_command(args: tuple[str, ...]) -> None:
    from orchestration.dbt import run_dbt

    if not run_dbt(_database_url(), *args):
        raise click.ClickException(f"dbt {' '.join(args)} failed")


@main.group(name="pipeline", help="Dagster: marts, detection and alerts.")
def pipeline_group() -> None:
    pass


@pipeline_group.command("run", help="""Materialise in this process, at once, what the sensor would launch:
the marts, then detection of the sessions ingested since the marts were last built, then alert delivery.
With --day or --all, judges those whole days instead (a backfill; verdicts already stored are kept).""")
@click.option("--day", "days", multiple=True, help="a UTC day to judge (YYYY-MM-DD), repeatable")
@click.option("--all", "all_days", is_flag=True, help="judge every day that has sessions")
@click.option("--verbose", is_flag=True, help="Dagster's and dbt's own log lines")
def pipeline_run(days: tuple[str, ...], all_days: bool, verbose: bool) -> None:
    from datetime import date

    import psycopg as pg

    from ingest_api.store import detection as detection_store
    from orchestration import pipeline

    url = _database_url()
    chosen = None
    if all_days:
        with pg.connect(url) as conn:
            chosen = detection_store.session_days(conn)
    elif days:
        try:
            chosen = [date.fromisoformat(d) for d in days]
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--day") from None
    tags, why = pipeline.plan(url, chosen)
    if tags is None:
        with pg.connect(url) as conn:
            pending = detection_store.pending_alert_count(conn)
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


@main.group(name="dagster", help="Dagster's services on their own (what `bagula run` starts), for deployments "
                                  "that run each service separately.")
def dagster_group() -> None:
    pass


def _exec_dagster(command: list[str]) -> None:
    env = {**os.environ, **instance.prepare(get_settings(), _database_url())}
    os.execvpe(command[0], command, env)


@dagster_group.command("webserver", help="Dagster's UI (instance in BAGULA_DAGSTER_HOME, storage in the database).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="default: BAGULA_DAGSTER_PORT or 3000")
def dagster_webserver(host: str, port: int | None) -> None:
    _exec_dagster(instance.webserver_command(host, port or get_settings().dagster_port))


@dagster_group.command("daemon", help="Dagster's daemon: the sensors, the schedule and the run queue.")
def dagster_daemon() -> None:
    _exec_dagster(instance.daemon_command())


@main.group(name="baseline", help="Per-agent baselines that regressions are judged against.")
def baseline_group() -> None:
    pass


def _project_id(conn: psycopg.Connection, project: str):
    row = conn.execute("select project_id from projects where name = %s", (project,)).fetchone()
    if row is None:
        raise click.ClickException(f"no project named {project!r}")
    return row[0]


@baseline_group.command("pin", help="Pin an agent's baseline to its sessions in [--from, --to).")
@click.option("--project", required=True)
@click.option("--agent", required=True)
@click.option("--from", "start_text", required=True, help="ISO 8601, e.g. 2026-11-20T00:00:00Z")
@click.option("--to", "end_text", required=True)
def baseline_pin(project: str, agent: str, start_text: str, end_text: str) -> None:
    import asyncio

    from ingest_api.store import verdicts

    start, end = _aware(start_text, "--from"), _aware(end_text, "--to")
    if end <= start:
        raise click.BadParameter("--to must be after --from")

    async def pin() -> dict:
        async with await psycopg.AsyncConnection.connect(_database_url()) as conn:
            project_id = (await (await conn.execute(
                "select project_id from projects where name = %s", (project,))).fetchone() or [None])[0]
            if project_id is None:
                raise click.ClickException(f"no project named {project!r}")
            return await verdicts.pin_baseline(conn, project_id, agent, start, end)

    try:
        pinned = asyncio.run(pin())
    except verdicts.MartsMissing:
        raise click.ClickException("the marts have not been built yet (bagula pipeline run)") from None
    except verdicts.EmptyWindow:
        raise click.ClickException(f"no session of {agent!r} started in that window") from None
    click.echo(f"pinned baseline {pinned['baseline_id']}: {pinned['session_count']} sessions, "
               f"{pinned['window_start']} .. {pinned['window_end']}")


@baseline_group.command("show", help="An agent's baselines (the active one first).")
@click.option("--project", required=True)
@click.option("--agent", required=True)
def baseline_show(project: str, agent: str) -> None:
    with psycopg.connect(_database_url()) as conn:
        project_id = _project_id(conn, project)
        rows = conn.execute(
            "select baseline_id, kind, active, window_start, window_end, session_count from baselines"
            " where project_id = %s and agent_name = %s order by active desc, created_at desc",
            (project_id, agent),
        ).fetchall()
    if not rows:
        click.echo("no baseline yet: the first stable window is found once enough sessions are in")
    for baseline_id, kind, active, start, end, count in rows:
        click.echo(f"{baseline_id}  {kind:<6} {'active' if active else 'inactive':<8} "
                   f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}  {count} sessions")


def _aware(text: str, name: str):
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint=name) from None
    if moment.tzinfo is None:
        raise click.BadParameter("needs a time zone, e.g. 2026-11-25T10:00:00Z", param_hint=name)
    return moment


def _parse_duration(text: str) -> float:
    """'90s', '10m', '2h', '7d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"not a duration: {text!r} (e.g. 90s, 10m, 2h, 7d)") from None


@main.command("simulate", help="""Send realistic agent traffic through the SDK, optionally with injected failures.

\b
Backfill a past range (default: the last 7 days) as fast as the API takes it:
  bagula simulate --days 7 --seed 1 --inject cost_creep@50% --inject cascade_failure@80%
Or stream live traffic, timed now, through the SDK's normal batching:
  bagula simulate --live --duration 10m

\b
--inject TYPE@START[..END][/AGENT]; START/END are ISO times or % of the range.
Types: cost_creep, cost_spike, latency_spike, sequential_tax, tool_usage_change,
model_change, confident_hallucination, context_rot, skill_bloat, cascade_failure.
Each faulty session is written to the ground-truth file (JSON lines).""")
@click.option("--endpoint", default=None, help="API URL; default BAGULA_ENDPOINT or http://127.0.0.1:8000")
@click.option("--api-key", default=None, help="default: BAGULA_API_KEY")
@click.option("--days", type=float, default=7.0, show_default=True, help="backfill: the range ends now and spans this many days")
@click.option("--start", "start_text", default=None, help="backfill range start (ISO 8601); overrides --days")
@click.option("--end", "end_text", default=None, help="backfill range end (ISO 8601); default now")
@click.option("--live", is_flag=True, help="real-time traffic from now on")
@click.option("--duration", default="10m", show_default=True, help="live mode: how long")
@click.option("--agents", default="support,research,pipeline", show_default=True)
@click.option("--scale", type=float, default=1.0, show_default=True, help="multiplies every agent's sessions per hour")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--inject", "inject_specs", multiple=True, help="a failure to inject (repeatable)")
@click.option("--ground-truth", "ground_truth_path", type=click.Path(dir_okay=False), default="simulation-ground-truth.jsonl", show_default=True)
@click.option("--progress/--no-progress", default=True)
def simulate_command(endpoint, api_key, days, start_text, end_text, live, duration, agents, scale, seed,
                     inject_specs, ground_truth_path, progress) -> None:
    from datetime import datetime, timezone
    from pathlib import Path

    from tqdm import tqdm

    from bagula_client import BagulaClient
    from simulator.agents import AGENTS
    from simulator.faults import GroundTruth, parse_injection
    from simulator.run import schedule, simulate

    def parse_time(text: str) -> float:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp() * 1000

    now_ms = time.time() * 1000
    if live:
        start_ms, end_ms = now_ms, now_ms + _parse_duration(duration) * 1000
    else:
        end_ms = parse_time(end_text) if end_text else now_ms
        start_ms = parse_time(start_text) if start_text else end_ms - days * 86_400_000
    if end_ms <= start_ms:
        raise click.BadParameter("the range ends before it starts")
    agent_keys = [a.strip() for a in agents.split(",") if a.strip()]
    unknown = set(agent_keys) - set(AGENTS)
    if unknown:
        raise click.BadParameter(f"unknown agents {sorted(unknown)}; choose from {sorted(AGENTS)}")
    try:
        injections = [parse_injection(spec, start_ms, end_ms) for spec in inject_specs]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    endpoint = endpoint or os.environ.get("BAGULA_ENDPOINT") or f"http://{get_settings().api_host}:{get_settings().api_port}"
    api_key = api_key or os.environ.get("BAGULA_API_KEY")
    if not api_key:
        raise click.ClickException("no API key: pass --api-key or set BAGULA_API_KEY")
    client = BagulaClient(api_key, endpoint, batch_size=50 if live else 500, flush_interval=1.0 if live else 0.5,
                          max_queue_size=100_000, initial_backoff=0.2, max_backoff=10.0)
    truth = GroundTruth(Path(ground_truth_path) if injections else None)
    runs = len(schedule(agent_keys, start_ms, end_ms, seed, scale))
    bar = tqdm(total=runs, unit="run", desc="simulating", disable=not progress, file=sys.stderr)
    try:
        result = simulate(client, agents=agent_keys, start_ms=start_ms, end_ms=end_ms, seed=seed, scale=scale,
                          injections=injections, ground_truth=truth, live=live, progress=bar.update)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
        truth.close()
        client.close()
    stats = result.client_stats
    click.echo(f"sent {result.total} sessions ({stats['duplicates']} already stored, {stats['rejected']} rejected):")
    for agent, count in sorted(result.sessions.items()):
        click.echo(f"  {agent:<24} {count}")
    if injections:
        click.echo(f"ground truth: {ground_truth_path}")
        for fault in injections:
            click.echo(f"  {fault.fault:<24} {result.faults.get(fault.fault, 0)} sessions ({fault.agent})")
    if stats["rejected"] or stats["dropped"]:
        raise click.ClickException(f"not everything was stored: {stats}")


def supervise(services: list[tuple[list[str], dict[str, str] | None]]) -> None:
    """Run the platform's services (argv, environment) until one exits or we are told
    to stop; then stop them all."""
    children = [subprocess.Popen(cmd, env=env) for cmd, env in services]

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()



main.add_command(superset_group)

if __name__ == "__main__":
    main()
