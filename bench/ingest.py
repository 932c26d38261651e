"""Ingest throughput: the API under N concurrent clients vs a plain COPY of the same rows.

    .venv/bin/python bench/ingest.py                      # own PostgreSQL + API, defaults
    .venv/bin/python bench/ingest.py --clients 8 --batches 300 --workers 2
    .venv/bin/python bench/ingest.py --url http://host:8000 --api-key bgl_... --database-url postgresql://...

Without --url it starts a throw-away PostgreSQL (durable settings unless
--no-fsync) and `bagula api`, both on this machine, as the README's figures were
measured. Prints sessions/s and p50/p99 batch latency, then the rate of a plain
COPY of the same rows into the same tables from one connection: in binary, as the API
writes them, and in text; the best of the four is the ratio's baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaleout import Api, api_cpu, own_cpu, postgres_cpu  # noqa: E402  (bench/, this script's directory)

from bagula.localdb import LocalPostgres, free_port  # noqa: E402
from ingest_api import db  # noqa: E402
from ingest_api.store import keys  # noqa: E402
from ingest_api.store.keys import Principal  # noqa: E402
from ingest_api.store.sessions import JSONB_VERSION, SessionRows, copy_rows_sync, encode  # noqa: E402
from ingest_api.wire import validate_session  # noqa: E402
from simulator.samples import make_session  # noqa: E402


def make_batches(count: int, size: int, seed: int) -> list[list[dict]]:
    """Realistic sessions (about 5 turns, 5 LLM and 5 tool calls each), all distinct."""
    rng = random.Random(seed)
    # Recent: the API accepts sessions up to BAGULA_MAX_SESSION_AGE_DAYS old.
    start_ms = int(time.time() * 1000) - 86_400_000
    templates = [make_session(rng, start_ms=start_ms + i * 1000) for i in range(200)]
    batches = []
    for b in range(count):
        batch = []
        for i in range(size):
            s = dict(templates[(b * size + i) % len(templates)])
            s["sessionId"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            batch.append(s)
        batches.append(batch)
    return batches


def cpu_used(cluster: LocalPostgres | None, api: subprocess.Popen | None, url: str) -> dict[str, float]:
    """CPU seconds used so far by PostgreSQL, this bench and the API (its process and workers),
    counted as bench/scaleout.py counts them: where a run's time goes on a machine the three
    share. Empty when the bench did not start them (--url)."""
    if cluster is None:
        return {}
    used = {"postgres": postgres_cpu(cluster), "bench": own_cpu()}
    if api is not None:
        used["api"] = api_cpu(Api(api, url))
    return used


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def drive_api(
    url: str, key: str, bodies: list[bytes], clients: int, compressed: bool
) -> tuple[float, list[float]]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if compressed:
        headers["Content-Encoding"] = "gzip"
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                response = await http.post("/v1/sessions/ingest", content=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:500]}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies


def plain_copy_rate(
    database_url: str, batches: list[list[dict]], per_transaction: int, cluster: LocalPostgres | None, binary: bool
) -> tuple[float, dict[str, float]]:
    """Sessions/s of COPY alone (rows built beforehand, one connection, no validation, no dedup),
    in binary as the API sends them or in text, and the CPU seconds per session it took of
    PostgreSQL and of this process (formatting rows)."""
    with psycopg.connect(database_url) as conn:
        new = keys.create_key(conn, f"bench-copy-{uuid.uuid4().hex[:8]}")
    principal = Principal(new.key_id, new.project_id)
    sessions = [validate_session(s, check_values=False)[0] for b in batches for s in b]
    chunks = []
    for i in range(0, len(sessions), per_transaction):
        rows = SessionRows()
        for s in sessions[i : i + per_transaction]:
            s["sessionId"] = uuid.uuid4()  # fresh ids: the API run stored the originals
            rows.extend(encode(principal, s).rows)
        chunks.append(rows if binary else as_text(rows))
    with psycopg.connect(database_url) as conn:
        cpu_before = cpu_used(cluster, None, "")
        started = time.perf_counter()
        for rows in chunks:
            with conn.transaction(), conn.cursor() as cur:
                if binary:
                    copy_rows_sync(cur, rows)
                    continue
                for table, columns, _, data in rows.tables():
                    with cur.copy(f"copy {table} ({columns}) from stdin") as copy:
                        for row in data:
                            copy.write_row(row)
        elapsed = time.perf_counter() - started
        cpu_after = cpu_used(cluster, None, "")
    return len(sessions) / elapsed, {k: (cpu_after[k] - cpu_before[k]) / len(sessions) for k in cpu_after}


def as_text(rows: SessionRows) -> SessionRows:
    """The rows as a text COPY takes them: ids as UUIDs and JSON as text, not as the bytes the
    API's binary COPY sends."""

    def text(columns: str, row: tuple) -> tuple:
        return tuple(
            None if v is None
            else uuid.UUID(bytes=v) if name in UUID_COLUMNS
            else v[len(JSONB_VERSION):].decode() if isinstance(v, bytes)
            else v
            for name, v in zip(columns.split(", "), row, strict=True)
        )

    return SessionRows(*([text(columns, row) for row in data] for _, columns, _, data in rows.tables()))


UUID_COLUMNS = {"project_id", "session_id", "api_key_id", "parent_session_id"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running API; default: start one here")
    parser.add_argument("--api-key")
    parser.add_argument("--database-url", help="for the plain-COPY comparison (default: the bench's own)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batches", type=int, default=240, help="50-session batches to send")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="API processes when the bench starts the API")
    parser.add_argument("--no-gzip", action="store_true", help="send plain JSON (the SDK sends gzip)")
    parser.add_argument("--no-fsync", action="store_true", help="throw-away database without fsync")
    args = parser.parse_args()

    cluster = api = None
    try:
        if args.url:
            url, key, database_url = args.url, args.api_key, args.database_url
        else:
            cluster = LocalPostgres(
                Path(tempfile.mkdtemp(prefix="bagula-bench-")), free_port(), durable=not args.no_fsync
            )
            database_url = cluster.ensure()
            db.upgrade(database_url)
            with psycopg.connect(database_url) as conn:
                key = keys.create_key(conn, "bench").secret
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            api = subprocess.Popen(
                [sys.executable, "-m", "bagula", "api", "--port", str(port), "--workers", str(args.workers)],
                env={**os.environ, "BAGULA_DATABASE_URL": database_url},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(100):
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)

        print(f"preparing {args.batches} batches of {args.batch_size} sessions ...", flush=True)
        batches = make_batches(args.batches, args.batch_size, seed=1)
        bodies = [orjson.dumps({"sessions": b, "timestamp": int(time.time() * 1000)}) for b in batches]
        raw_bytes = sum(map(len, bodies)) / (args.batches * args.batch_size)
        if not args.no_gzip:
            bodies = [gzip.compress(b, compresslevel=6) for b in bodies]

        # Warm up connections and code paths with a few batches not counted.
        warm = [orjson.dumps({"sessions": b}) for b in make_batches(4, args.batch_size, seed=2)]
        asyncio.run(drive_api(url, key, warm, 2, compressed=False))

        cpu_before = cpu_used(cluster, api, url)
        elapsed, latencies = asyncio.run(drive_api(url, key, bodies, args.clients, not args.no_gzip))
        cpu_after = cpu_used(cluster, api, url)
        sessions = args.batches * args.batch_size
        api_rate = sessions / elapsed
        print(f"session JSON: {raw_bytes / 1024:.1f} KB each; bodies {'gzip' if not args.no_gzip else 'plain'}")
        print(
            f"API ingest: {sessions} sessions in {elapsed:.1f} s = {api_rate:,.0f} sessions/s "
            f"({args.clients} clients, {args.batch_size}-session batches, {args.workers} API workers)"
        )
        print(
            f"batch latency: p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms"
        )

        if cpu_after:
            used = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
            print(
                "CPU per session: "
                + ", ".join(f"{k} {v / sessions * 1e6:,.0f} us" for k, v in used.items())
                + f"; {sum(used.values()) / elapsed:.2f} of {os.cpu_count()} cores busy"
            )

        if database_url:
            rates = {}
            for binary in (True, False):
                for per_tx in dict.fromkeys((args.batch_size, 500)):
                    rate, cpu = rates[binary, per_tx] = plain_copy_rate(database_url, batches, per_tx, cluster, binary)
                    print(
                        f"plain COPY ({'binary, as the API' if binary else 'text'}), one connection, "
                        f"{per_tx}-session transactions: {rate:,.0f} sessions/s"
                        + (f"  (API = {api_rate / rate:.0%} of it)" if per_tx == args.batch_size and binary else "")
                        + (f"; CPU per session: postgres {cpu['postgres'] * 1e6:,.0f} us, "
                           f"formatting rows {cpu['bench'] * 1e6:,.0f} us" if cpu else "")
                    )
            rates = {key: rate for key, (rate, _) in rates.items()}
            best = max(rates.values())
            print(
                f"API / best plain COPY in this run: {api_rate / best:.2f}"
                f"  (target >= 0.80; load average {'/'.join(f'{x:.1f}' for x in os.getloadavg())})"
            )
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=30)
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
