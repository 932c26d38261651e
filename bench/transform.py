"""Incremental transform cost: 1,000 new sessions on top of 10,000 and of 200,000 existing ones.

    .venv/bin/python bench/transform.py [--history 10000 200000] [--new 1000]

For each history size: a fresh database on a throw-away PostgreSQL, the history
loaded (simulated traffic, written through the ingest store's COPY path) and built
once, then the new sessions loaded and the incremental build timed: the models
alone (`dbt run`, what grows with data) and `bagula transform` (`dbt build`, models
plus the data tests, which scan whole tables). dbt's own start-up is included in
the wall times; the model times are dbt's per-model execution times summed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bagula.localdb import LocalPostgres, free_port  # noqa: E402
from ingest_api import db  # noqa: E402
from ingest_api.store import keys  # noqa: E402
from ingest_api.store import sessions as session_store  # noqa: E402
from ingest_api.store.keys import Principal  # noqa: E402
from ingest_api.wire import validate_session  # noqa: E402
from orchestration.dbt import build_vars, run_dbt, target_dir, transform  # noqa: E402
from simulator.run import generate  # noqa: E402

DAY = 86_400_000
SESSIONS_PER_DAY = 1330  # the three simulated agents at scale 1


def simulated(count: int, start_ms: float, seed: int) -> list[dict]:
    days = count / SESSIONS_PER_DAY * 1.1
    while True:  # traffic follows the time of day: widen the range until it holds enough
        produced = generate(["support", "research", "pipeline"], start_ms, start_ms + days * DAY, seed=seed)
        if len(produced) >= count:
            return [p.session for p in produced][:count]
        days *= 1.5


async def load(url: str, principal: Principal, sessions: list[dict]) -> None:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for i in range(0, len(sessions), 1000):
            batch = [session_store.encode(principal, validate_session(s, check_values=False)[0])
                     for s in sessions[i : i + 1000]]
            await session_store.ingest(conn, principal, batch)


def model_seconds() -> float:
    results = json.loads((target_dir() / "run_results.json").read_text())
    return sum(r["execution_time"] for r in results["results"] if r["unique_id"].startswith("model."))


def measure(cluster: LocalPostgres, history: int, new: int) -> dict:
    url = cluster.create_database(f"bench_transform_{history}")
    db.upgrade(url)
    with psycopg.connect(url) as conn:
        key = keys.create_key(conn, "bench")
    principal = Principal(key.key_id, key.project_id)
    start = 1_735_689_600_000  # 2025-01-01
    print(f"[{history:,}] loading history ...", flush=True)
    old = simulated(history, start, seed=1)
    asyncio.run(load(url, principal, old))
    # Steady state: autovacuum has seen the history (and does not run during the timings).
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")
    print(f"[{history:,}] first build ...", flush=True)
    started = time.perf_counter()
    assert transform(url, "--quiet"), "first build failed"
    first_build = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")

    fresh = simulated(new, max(s["endTime"] for s in old) + 60_000, seed=2)
    asyncio.run(load(url, principal, fresh))
    upto = json.dumps({"watermark": build_vars(url)["watermark"]})
    started = time.perf_counter()
    assert run_dbt(url, "run", "--quiet", "--vars", upto), "incremental run failed"
    run_wall = time.perf_counter() - started
    run_models = model_seconds()

    # The same step as `bagula transform` does it, tests included, on the next new batch.
    more = simulated(new, max(s["endTime"] for s in fresh) + 60_000, seed=3)
    asyncio.run(load(url, principal, more))
    started = time.perf_counter()
    assert transform(url, "--quiet"), "incremental build failed"
    build_wall = time.perf_counter() - started
    return {"first_build": first_build, "run_wall": run_wall, "run_models": run_models, "build_wall": build_wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, nargs="+", default=[10_000, 200_000])
    parser.add_argument("--new", type=int, default=1000)
    args = parser.parse_args()
    cluster = LocalPostgres(Path(tempfile.mkdtemp(prefix="bagula-bench-")), free_port())
    cluster.ensure()
    try:
        results = {h: measure(cluster, h, args.new) for h in args.history}
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base_dir, ignore_errors=True)
    print(f"\nincremental build after {args.new:,} new sessions")
    print(f"{'history':>10} {'models (s)':>11} {'dbt run (s)':>12} {'dbt build (s)':>14} {'first build (s)':>16}")
    for history, r in results.items():
        print(f"{history:>10,} {r['run_models']:>11.2f} {r['run_wall']:>12.2f} {r['build_wall']:>14.2f} {r['first_build']:>16.1f}")
    if len(results) >= 2:
        small, large = results[args.history[0]], results[args.history[-1]]
        print(f"ratio {args.history[-1]:,} / {args.history[0]:,}: models {large['run_models'] / small['run_models']:.2f}x, "
              f"dbt run {large['run_wall'] / small['run_wall']:.2f}x, dbt build {large['build_wall'] / small['build_wall']:.2f}x")


if __name__ == "__main__":
    main()
