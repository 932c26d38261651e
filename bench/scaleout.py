"""Scale-out of the ingest API: API processes against one database add up, until the machine's
cores (or the database) run out; exactly once holds across them.

    .venv/bin/python bench/scaleout.py                  # own PostgreSQL, the figures of docs/scaling.md
    .venv/bin/python bench/scaleout.py --batches 480 --clients 16 --no-fsync

Starts a throw-away PostgreSQL on this machine (durable settings unless --no-fsync) and, in turn:
one API process (one server process, as one pod or container runs it), two API processes on two
ports with the clients alternating between them, and one API process with two workers (the
single-machine default). Each is driven like bench/ingest.py drives the API: N concurrent
clients, gzip bodies, 50-session batches from simulator.samples, all distinct. Prints sessions/s,
batch latency, and the CPU each part spent per 1000 sessions (API processes, PostgreSQL, this
load generator), from which the sessions/s one core of API and one core of database can carry.
Last, every batch of a set that overlaps by half is sent to both processes at once: each session
must be stored exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bagula.localdb import LocalPostgres, free_port  # noqa: E402
from ingest_api import db  # noqa: E402
from ingest_api.store import keys  # noqa: E402
from ingest_api.store import sessions as session_store  # noqa: E402
from ingest_api.wire import validate_session  # noqa: E402
from simulator.samples import make_batch  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU of a process (with ``children``: also of its exited, waited-for children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / TICKS


def postgres_cpu(cluster: LocalPostgres) -> float:
    """Every process of the cluster: the postmaster (with its exited children) and its live children."""
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if parent == postmaster:
                total += cpu_seconds(int(entry.name))
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Api:
    process: subprocess.Popen
    url: str


def start_api(database_url: str, workers: int) -> Api:
    port = free_port()
    env = {**os.environ, "BAGULA_DATABASE_URL": database_url, "BAGULA_RATE_LIMIT_PER_KEY": "1000000/second"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bagula", "api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return Api(process, url)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not start")


def api_cpu(api: Api) -> float:
    """The API's processes: the server, or uvicorn's supervisor and its workers."""
    total = cpu_seconds(api.process.pid, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if parent == api.process.pid:
                total += cpu_seconds(int(entry.name))
    return total


def stop(api: Api) -> None:
    os.killpg(api.process.pid, 15)
    api.process.wait(timeout=30)


def batches(count: int, size: int, rng: random.Random) -> list[list[dict]]:
    """Realistic sessions started within the last day, each generated on its own (what the
    database stores, and compresses, is as varied as the simulator makes it)."""
    start = int(time.time() * 1000) - 86_400_000
    return [make_batch(rng, size, start_ms=start + b * size * 1000) for b in range(count)]


def bodies(count: int, size: int, rng: random.Random) -> list[bytes]:
    """Gzip request bodies, as the SDK sends them."""
    return [
        gzip.compress(orjson.dumps({"sessions": batch, "timestamp": int(time.time() * 1000)}), 6)
        for batch in batches(count, size, rng)
    ]


async def drive(urls: list[str], key: str, payloads: list[bytes], clients: int) -> tuple[float, list[float]]:
    """``clients`` concurrent clients, client i posting to urls[i % len(urls)]; (seconds, latencies)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for payload in payloads:
        queue.put_nowait(payload)
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Content-Encoding": "gzip"}

    async def client(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
            while not queue.empty():
                payload = queue.get_nowait()
                started = time.perf_counter()
                response = await http.post("/v1/sessions/ingest", content=payload)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

    started = time.perf_counter()
    await asyncio.gather(*(client(urls[i % len(urls)]) for i in range(clients)))
    return time.perf_counter() - started, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def measure(
    name: str,
    cluster: LocalPostgres,
    database_url: str,
    key: str,
    layout: list[int],
    args: argparse.Namespace,
    rng: random.Random,
) -> float:
    apis = [start_api(database_url, workers) for workers in layout]
    try:
        urls = [api.url for api in apis]
        asyncio.run(drive(urls, key, bodies(4 * len(urls), args.batch_size, rng), len(urls)))  # warm up
        payloads = bodies(args.batches, args.batch_size, rng)
        wal_before = wal_position(database_url)
        before = (sum(api_cpu(a) for a in apis), postgres_cpu(cluster), own_cpu())
        elapsed, latencies = asyncio.run(drive(urls, key, payloads, args.clients))
        after = (sum(api_cpu(a) for a in apis), postgres_cpu(cluster), own_cpu())
        wal = wal_bytes_since(database_url, wal_before)
    finally:
        for api in apis:
            stop(api)
    sessions = args.batches * args.batch_size
    rate = sessions / elapsed
    api_s, db_s, client_s = (a - b for a, b in zip(after, before, strict=True))
    per_k = 1000 / sessions
    print(
        f"{name:<34} {rate:>7,.0f} sessions/s   p50 {percentile(latencies, 50) * 1000:>4.0f} ms  "
        f"p99 {percentile(latencies, 99) * 1000:>5.0f} ms   CPU s per 1000 sessions: API {api_s * per_k:.3f}, "
        f"PostgreSQL {db_s * per_k:.3f}, clients {client_s * per_k:.3f}; WAL {wal / sessions / 1024:.1f} KB/session",
        flush=True,
    )
    return rate, api_s * per_k, db_s * per_k


def wal_position(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        return conn.execute("select pg_current_wal_lsn()::text").fetchone()[0]


def wal_bytes_since(database_url: str, position: str) -> int:
    with psycopg.connect(database_url) as conn:
        return int(conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (position,)).fetchone()[0])


RAW_TABLES = ("session_ledger", "agent_sessions", "session_turns", "llm_calls", "tool_calls")
# What TimescaleDB's compression would be told for the two hypertables (docs/scaling.md).
COMPRESSION = {
    "agent_sessions": ("project_id, agent_name", "start_time desc, session_id"),
    "llm_calls": ("project_id", "start_time desc, session_id, call_id"),
}


def table_bytes(conn: psycopg.Connection, table: str, hypertable: bool) -> int:
    query = "select hypertable_size(%s::regclass)" if hypertable else "select pg_total_relation_size(%s::regclass)"
    return int(conn.execute(query, (table,)).fetchone()[0])


def storage(database_url: str) -> None:
    """Bytes per stored session, per raw table; with TimescaleDB, what compressing the
    hypertables' chunks leaves of them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        sessions = conn.execute("select count(*) from agent_sessions").fetchone()[0]
        hypertables = (
            {row[0] for row in conn.execute("select hypertable_name from timescaledb_information.hypertables")}
            if conn.execute("select count(*) from pg_extension where extname = 'timescaledb'").fetchone()[0]
            else set()
        )
        sizes = {t: table_bytes(conn, t, t in hypertables) for t in RAW_TABLES}
        print(
            f"stored: {sessions:,} sessions, {sum(sizes.values()) / sessions / 1024:.1f} KB each on disk "
            f"(tables and indexes: " + ", ".join(f"{t} {b / sessions / 1024:.1f}" for t, b in sizes.items()) + ")"
        )
        if not hypertables:
            print("compression: TimescaleDB is not installed here; not measured")
            return
        for table in sorted(hypertables & set(COMPRESSION)):
            segment_by, order_by = COMPRESSION[table]
            conn.execute(
                f"alter table {table} set (timescaledb.compress, timescaledb.compress_segmentby = "
                f"'{segment_by}', timescaledb.compress_orderby = '{order_by}')"
            )
            conn.execute(f"select compress_chunk(c, if_not_compressed => true) from show_chunks('{table}') c")
            after = table_bytes(conn, table, True)
            print(
                f"compression: {table} {sizes[table] / 1024 / 1024:.1f} MiB -> {after / 1024 / 1024:.1f} MiB "
                f"(x{sizes[table] / after:.1f}; segment by {segment_by}, order by {order_by})"
            )


async def write_only(database_url: str, principal: keys.Principal, encoded: list[list], connections: int) -> float:
    """The API's database work alone: each batch's transaction (ledger claim, COPY), rows prepared
    beforehand, from ``connections`` connections; seconds."""
    queue: asyncio.Queue[list] = asyncio.Queue()
    for batch in encoded:
        queue.put_nowait(batch)

    async def writer() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            while not queue.empty():
                await session_store.ingest(conn, principal, queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(connections)))
    return time.perf_counter() - started


def measure_database(cluster: LocalPostgres, database_url: str, args: argparse.Namespace, rng: random.Random) -> float:
    with psycopg.connect(database_url) as conn:
        new = keys.create_key(conn, f"write-only-{uuid.uuid4().hex[:6]}")
    principal = keys.Principal(new.key_id, new.project_id)
    encoded = [
        [session_store.encode(principal, validate_session(s, check_values=True)[0]) for s in batch]
        for batch in batches(args.batches, args.batch_size, rng)
    ]
    before = (postgres_cpu(cluster), own_cpu())
    elapsed = asyncio.run(write_only(database_url, principal, encoded, args.clients))
    after = (postgres_cpu(cluster), own_cpu())
    sessions = args.batches * args.batch_size
    per_k = 1000 / sessions
    db_s, writer_s = (a - b for a, b in zip(after, before, strict=True))
    print(
        f"{'database alone (no API)':<34} {sessions / elapsed:>7,.0f} sessions/s   the API's transactions from "
        f"{args.clients} connections, rows prepared beforehand; CPU s per 1000 sessions: PostgreSQL "
        f"{db_s * per_k:.3f}, writer {writer_s * per_k:.3f}",
        flush=True,
    )
    return sessions / elapsed


async def overlap(urls: list[str], key: str, batches: list[list[dict]]) -> list[dict]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=120) as http:

        async def post(url: str, batch: list[dict]) -> dict:
            response = await http.post(url + "/v1/sessions/ingest", json={"sessions": batch, "timestamp": 0})
            response.raise_for_status()
            return response.json()

        return await asyncio.gather(*(post(url, batch) for batch in batches for url in urls))


def exactly_once(database_url: str, args: argparse.Namespace, rng: random.Random) -> None:
    with psycopg.connect(database_url) as conn:
        new = keys.create_key(conn, f"overlap-{uuid.uuid4().hex[:6]}")
    half = args.batch_size // 2
    sessions = make_batch(rng, (40 + 1) * half, start_ms=int(time.time() * 1000) - 3_600_000)
    batches = [sessions[i * half : i * half + args.batch_size] for i in range(40)]
    apis = [start_api(database_url, 1) for _ in range(2)]
    try:
        answers = asyncio.run(overlap([a.url for a in apis], new.secret, batches))
    finally:
        for api in apis:
            stop(api)
    distinct = {s["sessionId"] for batch in batches for s in batch}
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select count(*) from agent_sessions where project_id = %s", (new.project_id,)).fetchone()[
            0
        ]
    stored = sum(a["stored"] for a in answers)
    duplicates = sum(a["duplicates"] for a in answers)
    sent = 2 * sum(len(b) for b in batches)
    verdict = "holds" if stored == rows == len(distinct) and stored + duplicates == sent else "BROKEN"
    print(
        f"exactly once across 2 processes: {sent} sessions sent ({len(distinct)} distinct, every batch to both "
        f"at once, batches overlapping by half): {stored} stored, {duplicates} duplicates, "
        f"{rows} rows -> {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batches", type=int, default=240, help="batches per measurement")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--no-fsync", action="store_true", help="throw-away database without fsync")
    args = parser.parse_args()

    cluster = LocalPostgres(Path(tempfile.mkdtemp(prefix="bagula-bench-")), free_port(), durable=not args.no_fsync)
    rng = random.Random(1)
    try:
        database_url = cluster.ensure()
        db.upgrade(database_url)
        with psycopg.connect(database_url) as conn:
            key = keys.create_key(conn, "bench").secret
        # Throughput needs the machine to itself; CPU per session much less so.
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print(
            f"{os.cpu_count()} cores; PostgreSQL {'without fsync' if args.no_fsync else 'durable'} on the same "
            f"machine; {args.clients} clients, gzip, {args.batch_size}-session batches, "
            f"{args.batches * args.batch_size} sessions per line",
            flush=True,
        )
        one, api_ms, db_ms = measure("1 API process", cluster, database_url, key, [1], args, rng)
        two, _, _ = measure("2 API processes, 2 ports", cluster, database_url, key, [1, 1], args, rng)
        measure("1 API process, 2 workers", cluster, database_url, key, [2], args, rng)
        measure_database(cluster, database_url, args, rng)
        print(f"2 processes / 1 process: x{two / one:.2f}")
        print(
            f"one core of API carries ~{1 / api_ms * 1000:,.0f} sessions/s; one core of PostgreSQL "
            f"~{1 / db_ms * 1000:,.0f} sessions/s (from the 1-process CPU figures)"
        )
        exactly_once(database_url, args, rng)
        storage(database_url)
        print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
