"""Incidents per failure mode: what an on-call engineer would be paged for, through the live path.

    .venv/bin/python bench/incidents.py [--days 7] [--scale 0.3] [--seed 21] [--batch-hours 6]

One project per failure mode (the fault alone, injected from 50% of the range on; spikes for
5% of it) plus a clean control, on a throw-away PostgreSQL. The sessions arrive in the order
of their start times, `--batch-hours` of agent time per batch (through the ingest store, as
the API writes them); after each batch the live path (`bagula pipeline live`) takes what is
due: incremental marts, detection, incident grouping, alerts at the default minimum severity
(critical) and, for every project, a route that pages from `major` on. For each mode:

- incidents opened, by kind, and whether one of them is the injected fault's own kind;
- how early: agent time from the first faulty session to its incident's opening, and the
  faulty sessions seen until then;
- alerts: opening/escalation messages and resolutions.

Target: one incident per injected fault, none on the clean control. Wall-clock per live pass
is printed too (what bench/freshness.py measures end to end through `bagula run`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bagula.localdb import LocalPostgres, free_port  # noqa: E402
from ingest_api import db  # noqa: E402
from ingest_api.store import alert_routes, keys  # noqa: E402
from ingest_api.store import sessions as session_store  # noqa: E402
from ingest_api.store.keys import Principal  # noqa: E402
from ingest_api.wire import validate_session  # noqa: E402
from simulator.faults import FAULT_TYPES, parse_injection  # noqa: E402
from simulator.run import generate  # noqa: E402

HOUR = 3_600_000
DAY = 24 * HOUR
START = 1_780_272_000_000  # 2026-06-01T00:00:00Z
# The incident kinds that name each injected fault (detectors name some faults differently).
OWN_KINDS = {"tool_usage_change": {"tool_usage_change", "tool_share_shift"}}


async def load(url: str, batch: list[tuple[Principal, dict]]) -> None:
    by_project: dict[Principal, list[dict]] = defaultdict(list)
    for principal, session in batch:
        by_project[principal].append(session)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for principal, sessions in by_project.items():
            for i in range(0, len(sessions), 500):
                encoded = [session_store.encode(principal, validate_session(s, check_values=False)[0])
                           for s in sessions[i:i + 500]]
                await session_store.ingest(conn, principal, encoded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--scale", type=float, default=0.3, help="share of the simulator's traffic")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--batch-hours", type=float, default=6.0)
    parser.add_argument("--modes", default=",".join(FAULT_TYPES), help="comma-separated failure modes")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    end = START + args.days * DAY
    cluster = LocalPostgres(Path(tempfile.mkdtemp(prefix="bagula-incidents-")), free_port())
    url = cluster.ensure()
    os.environ["BAGULA_DATABASE_URL"] = url
    os.environ.pop("BAGULA_ALERT_WEBHOOK_URL", None)
    try:
        db.upgrade(url)
        truth: dict[str, set[str]] = {}
        projects: dict[str, str] = {}
        arrivals: list[tuple[float, Principal, dict]] = []
        for mode in [*modes, "control"]:
            with psycopg.connect(url) as conn:
                key = keys.create_key(conn, mode)
                # Every project pages from major on (a webhook that is never called: alerts are counted).
                alert_routes.set_route(conn, key.project_id, "http://127.0.0.1:9/unused", "major")
            projects[mode] = str(key.project_id)
            spec = [] if mode == "control" else [parse_injection(f"{mode}@50%", START, end)]
            produced = generate(["support", "research", "pipeline"], START, end, seed=args.seed, scale=args.scale,
                                injections=spec)
            truth[mode] = {p.session["sessionId"] for p in produced if any(f.fault == mode for f in p.faults)}
            principal = Principal(key.key_id, key.project_id)
            arrivals += [(p.session["startTime"], principal, p.session) for p in produced]
        arrivals.sort(key=lambda a: a[0])
        print(f"{len(arrivals):,} sessions in {len(projects)} projects, {args.days:g} days, "
              f"batches of {args.batch_hours:g} h of agent time", flush=True)

        from orchestration.live import LivePath
        from orchestration.settings import OrchestrationSettings

        live = LivePath(url, OrchestrationSettings(database_url=url, alert_attempts=1))
        passes: list[float] = []
        started = time.perf_counter()
        step = args.batch_hours * HOUR
        edge, i = START + step, 0
        while i < len(arrivals):
            batch = []
            while i < len(arrivals) and arrivals[i][0] < edge:
                batch.append(arrivals[i][1:])
                i += 1
            edge += step
            if batch:
                asyncio.run(load(url, batch))
            while (outcome := live.step()) is not None:
                passes.append(outcome.seconds)
        live.close()
        print(f"{len(passes)} live passes in {time.perf_counter() - started:.0f} s: median "
              f"{statistics.median(passes):.1f} s, max {max(passes):.1f} s per pass\n")
        report(url, projects, truth, modes)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base_dir, ignore_errors=True)


def report(url: str, projects: dict[str, str], truth: dict[str, set[str]], modes: list[str]) -> None:
    with psycopg.connect(url) as conn:
        incidents = conn.execute("""
            select project_id::text, incident_id::text, kind, status, opened_at, peak_severity
            from incidents where status <> 'discarded' and opened_at is not null""").fetchall()
        alerts = dict(conn.execute("""
            select e.project_id::text || '/' || (e.event = 'resolved')::text, count(*)
            from alerts a join incident_events e on e.event_id = a.source_id
            group by 1""").fetchall())
        first_faulty = {}
        for mode in modes:
            first_faulty[mode] = conn.execute(
                "select min(start_time) from agent_sessions where project_id = %s and session_id = any(%s::uuid[])",
                (projects[mode], sorted(truth[mode]))).fetchone()[0] if truth[mode] else None

        def faulty_until(mode: str, opened) -> int:
            return conn.execute(
                "select count(*) from agent_sessions where project_id = %s and session_id = any(%s::uuid[])"
                " and start_time <= %s", (projects[mode], sorted(truth[mode]), opened)).fetchone()[0]

        print(f"{'failure mode':<24} {'faulty':>6} {'incidents (kind:severity)':<44} {'own':>3} "
              f"{'opened after':>12} {'faulty seen':>11} {'pages':>5} {'resolved':>8}")
        for mode in [*modes, "control"]:
            project = projects[mode]
            mine = sorted((i for i in incidents if i[0] == project), key=lambda i: i[4])
            kinds = ", ".join(f"{i[2]}:{i[5]}" for i in mine) or "-"
            own = [i for i in mine if i[2] in OWN_KINDS.get(mode, {mode})]
            after = seen = "-"
            if own and first_faulty.get(mode):
                delay = (own[0][4] - first_faulty[mode]).total_seconds() / 60
                after = f"{delay:.0f} min"
                seen = str(faulty_until(mode, own[0][4]))
            pages = alerts.get(f"{project}/false", 0)
            resolutions = alerts.get(f"{project}/true", 0)
            faulty = len(truth.get(mode, ())) if mode != "control" else 0
            print(f"{mode:<24} {faulty:>6} {kinds[:44]:<44} {'yes' if own else 'no':>3} "
                  f"{after:>12} {seen:>11} {pages:>5} {resolutions:>8}")


if __name__ == "__main__":
    main()
