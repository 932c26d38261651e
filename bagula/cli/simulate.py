"""`bagula simulate`: realistic agent traffic through the SDK, with injected failures."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import click
from tqdm import tqdm

from bagula.cli.common import parse_duration
from bagula.settings import get_platform_settings
from bagula_client import BagulaClient
from simulator.agents import AGENTS
from simulator.faults import FAULT_TYPES, GroundTruth, parse_injection
from simulator.run import schedule, simulate

HELP = """Send realistic agent traffic through the SDK, optionally with injected failures.

\b
Backfill a past range (default: the last 7 days) as fast as the API takes it:
  bagula simulate --days 7 --seed 1 --inject cost_creep@50% --inject cascade_failure@80%
Or stream live traffic, timed now, through the SDK's normal batching:
  bagula simulate --live --duration 10m

\b
--inject TYPE@START[..END][/AGENT]; START/END are ISO times or % of the range.
{types}
Each faulty session is written to the ground-truth file (JSON lines)."""


@click.command("simulate", help=HELP.format(types=textwrap.fill("Types: " + ", ".join(FAULT_TYPES) + ".", 79)))
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
    def parse_time(text: str) -> float:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp() * 1000

    now_ms = time.time() * 1000
    if live:
        start_ms, end_ms = now_ms, now_ms + parse_duration(duration) * 1000
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

    settings = get_platform_settings()
    endpoint = endpoint or os.environ.get("BAGULA_ENDPOINT") or f"http://{settings.api_host}:{settings.api_port}"
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
