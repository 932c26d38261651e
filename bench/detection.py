"""Detection quality: precision and recall per failure mode, through the real pipeline.

    .venv/bin/python bench/detection.py [--days 7] [--seed 21]

One project per failure mode (the fault alone, injected from 50% of the range on;
spikes for 5% of it) plus a clean control, on a throw-away PostgreSQL. Sessions
are written through the ingest store, then the marts and detection are built
the way `bagula pipeline run` does it. For each mode: the sessions the simulator
says the fault shaped (ground truth), how many carry an anomaly of the matching
type (recall), and how many of the sessions flagged with that type were injected
(precision). The control's verdicts are counted by severity.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bagula.localdb import LocalPostgres, free_port  # noqa: E402
from ingest_api import db  # noqa: E402
from ingest_api.store import keys  # noqa: E402
from ingest_api.store import sessions as session_store  # noqa: E402
from ingest_api.store.keys import Principal  # noqa: E402
from ingest_api.wire import validate_session  # noqa: E402
from simulator.faults import FAULT_TYPES, parse_injection  # noqa: E402
from simulator.run import generate  # noqa: E402

DAY = 86_400_000
START = 1_780_272_000_000  # 2026-06-01T00:00:00Z


async def load(url: str, principal: Principal, sessions: list[dict]) -> None:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for i in range(0, len(sessions), 1000):
            batch = [session_store.encode(principal, validate_session(s, check_values=False)[0])
                     for s in sessions[i : i + 1000]]
            await session_store.ingest(conn, principal, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    end = START + args.days * DAY
    cluster = LocalPostgres(Path(tempfile.mkdtemp(prefix="bagula-bench-")), free_port())
    url = cluster.ensure()
    os.environ["BAGULA_DATABASE_URL"] = url
    os.environ.pop("BAGULA_ALERT_WEBHOOK_URL", None)
    try:
        db.upgrade(url)
        truth: dict[str, dict[str, set[str]]] = {}
        projects: dict[str, str] = {}
        started = time.perf_counter()
        for fault in [*FAULT_TYPES, "control"]:
            with psycopg.connect(url) as conn:
                key = keys.create_key(conn, fault)
            projects[fault] = str(key.project_id)
            spec = [] if fault == "control" else [parse_injection(f"{fault}@50%", START, end)]
            produced = generate(["support", "research", "pipeline"], START, end, seed=args.seed, injections=spec)
            truth[fault] = {p.session["sessionId"]: {f.fault for f in p.faults} for p in produced}
            asyncio.run(load(url, Principal(key.key_id, key.project_id), [p.session for p in produced]))
        total = sum(len(t) for t in truth.values())
        print(f"{total:,} sessions in {len(projects)} projects loaded in {time.perf_counter() - started:.1f} s",
              flush=True)

        from orchestration import pipeline

        started = time.perf_counter()
        tags, why = pipeline.plan(url)
        result = pipeline.run_pipeline(tags, quiet=True)
        assert result.success, "the pipeline failed"
        print(f"marts + detection ({why}): {time.perf_counter() - started:.1f} s\n")

        with psycopg.connect(url) as conn:
            rows = conn.execute("select project_id::text, session_id::text, anomaly_type, severity from anomalies"
                                ).fetchall()
            regressions = conn.execute("select project_id::text, severity from regressions").fetchall()
        flagged: dict[tuple[str, str], set[str]] = {}
        for project, session, kind, _ in rows:
            flagged.setdefault((project, kind), set()).add(session)

        print(f"{'failure mode':<24} {'injected':>8} {'flagged':>8} {'recall':>7} {'precision':>9}")
        for fault in FAULT_TYPES:
            injected = {s for s, faults in truth[fault].items() if fault in faults}
            found = flagged.get((projects[fault], fault), set())
            hits = len(injected & found)
            recall = hits / len(injected) if injected else float("nan")
            precision = hits / len(found) if found else float("nan")
            print(f"{fault:<24} {len(injected):>8} {len(found):>8} {recall:>7.2f} {precision:>9.2f}")

        control = projects["control"]
        by_severity = Counter(sev for project, _, _, sev in rows if project == control)
        by_type = Counter(kind for project, _, kind, _ in rows if project == control)
        reg = Counter(sev for project, sev in regressions if project == control)
        print(f"\nclean control: {len(truth['control']):,} sessions; anomalies by severity {dict(by_severity)}, "
              f"by type {dict(by_type)}; regressions by severity {dict(reg)}")
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
