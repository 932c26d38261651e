"""Soak: mixed good, bad and hostile traffic against `bagula run` for a while, printing the
5xx count (it must stay 0), the memory of every process of the platform and the lag from
ingest to the marts.

    .venv/bin/python bench/soak.py [--minutes 10] [--clients 4] [--report-every 15]

Starts `bagula run` on a throw-away project-local PostgreSQL (Dagster builds the marts and
runs detection as it would in production), then keeps `--clients` threads busy with a mix:
good batches, resent batches (duplicates), invalid sessions, hostile bodies (deep nesting,
huge numbers, NUL characters, gzip bombs, oversized and unauthenticated bodies, bogus keys,
NUL in paths) and reads (agents, session lists, metrics, anomalies). Exits 1 on any 5xx.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bagula.localdb import LocalPostgres, free_port  # noqa: E402
from ingest_api.store.freshness import marts_lag_seconds  # noqa: E402
from simulator.samples import make_batch, make_session  # noqa: E402

INGEST = "/v1/sessions/ingest"


def now_ms() -> int:
    return int(time.time() * 1000)


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def traffic(rng: random.Random, client: httpx.Client, base: str, sent: list) -> httpx.Response:
    """One request of the mix, chosen at random."""
    kind = rng.choices(["good", "resend", "invalid", "deep", "huge", "nul", "bomb", "oversize", "bogus-key",
                        "nul-path", "read"], weights=[40, 8, 8, 3, 3, 3, 2, 2, 4, 3, 24])[0]
    if kind == "good":
        batch = make_batch(rng, 50, start_ms=now_ms() - 60_000, turns=3)
        sent.append(batch)
        return client.post(INGEST, json={"sessions": batch})
    if kind == "resend" and sent:
        return client.post(INGEST, json={"sessions": rng.choice(sent)})
    if kind == "invalid":
        bad = make_session(rng, start_ms=now_ms())
        bad["turns"][0]["llmCalls"][0]["metrics"]["tokensInput"] = -1
        return client.post(INGEST, json={"sessions": [bad, {"sessionId": "nope"}]})
    if kind == "deep":
        deep = make_session(rng, start_ms=now_ms())
        deep["metadata"] = nested(rng.choice([100, 300, 900]))
        return client.post(INGEST, json={"sessions": [deep]})
    if kind == "huge":
        body = orjson.dumps({"sessions": [make_session(rng, start_ms=now_ms())]}).replace(
            b'"region":"eu-west-1"', b'"region":123456789012345678901234567890', 1)
        return client.post(INGEST, content=body, headers={"Content-Type": "application/json"})
    if kind == "nul":
        session = make_session(rng, start_ms=now_ms())
        session["initialRequest"] = "hello\u0000world"
        return client.post(INGEST, json={"sessions": [session]})
    if kind == "bomb":
        session = make_session(rng, start_ms=now_ms(), turns=1)
        session["turns"] = [{}] * 100_000
        return client.post(INGEST, content=gzip.compress(orjson.dumps({"sessions": [session]})),
                           headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    if kind == "oversize":
        return httpx.post(base + INGEST, content=b" " * 12_000_000, headers={"Content-Type": "application/json"})
    if kind == "bogus-key":
        return httpx.get(base + "/v1/agents", headers={"Authorization": "Bearer bgl_" + "x" * 43})
    if kind == "nul-path":
        return client.get("/v1/agents/a%00b/sessions")
    path = rng.choice(["/v1/agents", "/v1/agents/customer-support-agent/sessions?limit=100",
                       "/v1/agents/customer-support-agent/metrics?window=1h",
                       "/v1/agents/customer-support-agent/anomalies?limit=20"])
    return client.get(path)


def memory_mb(root_pid: int) -> dict[str, float]:
    """Resident memory of the platform's processes (the root and every descendant), by name."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        names[int(entry.name)] = cmdline
    found: dict[str, float] = Counter()
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            rss = next(int(line.split()[1]) for line in (Path(f"/proc/{pid}/status").read_text().splitlines())
                       if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        found[_label(names.get(pid, "?"))] += rss / 1024
    return dict(found)


def _label(cmdline: str) -> str:
    for needle, label in (("bagula run", "run"), ("bagula api", "api"), ("multiprocessing", "api-worker"),
                          ("dagster-webserver", "dagster-webserver"), ("dagster-daemon", "dagster-daemon"),
                          ("dagster", "dagster-run"), ("gunicorn", "superset"), ("postgres", "postgres"),
                          ("dbt", "dbt")):
        if needle in cmdline:
            return label
    return cmdline.split(" ")[0].rsplit("/", 1)[-1] or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--report-every", type=float, default=15.0, help="seconds between report lines")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="bagula-soak-"))
    data_dir.chmod(0o755)
    port, db_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "BAGULA_DATABASE_URL"}
    env |= {"BAGULA_DATA_DIR": str(data_dir), "BAGULA_LOCAL_DB_PORT": str(db_port),
            "BAGULA_DAGSTER_PORT": str(free_port()), "BAGULA_SUPERSET_PORT": str(free_port()),
            "BAGULA_METRICS_PORT": str(free_port()), "BAGULA_RATE_LIMIT_PER_KEY": "1000/second",
            # Every client here shares one address, bogus keys included: brake only a real flood.
            "BAGULA_FAILED_AUTH_LIMIT": "100000/minute"}
    log = data_dir / "run.log"
    platform = subprocess.Popen([sys.executable, "-m", "bagula", "run", "--port", str(port)],
                                env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    statuses: Counter = Counter()
    server_errors: list[str] = []
    transport_errors: dict[str, str] = {}  # the first of each kind, for the report
    stop = threading.Event()
    lock = threading.Lock()
    try:
        deadline = time.monotonic() + 180
        while "shown once): " not in log.read_text():
            if time.monotonic() > deadline or platform.poll() is not None:
                raise SystemExit("the platform did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.5)
        key = log.read_text().split("shown once): ")[1].split()[0]
        database_url = LocalPostgres(data_dir / "postgres", db_port).url()
        # Warm-up, not counted: the first batch and the first build of the marts (until then the
        # endpoints that read the marts answer 503 by design, as a fresh install does).
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            client.post(INGEST, json={"sessions": make_batch(random.Random(-1), 50, start_ms=now_ms() - 60_000)})
            while client.get("/v1/agents/customer-support-agent/metrics").status_code != 200:
                if time.monotonic() > deadline + 300:
                    raise SystemExit("the marts were never built:\n" + log.read_text()[-3000:])
                time.sleep(1)

        def client_loop(seed: int) -> None:
            rng = random.Random(seed)
            sent: list = []
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
                while not stop.is_set():
                    try:
                        answer = traffic(rng, client, base, sent[-20:])
                    except httpx.HTTPError as exc:
                        with lock:
                            statuses[type(exc).__name__] += 1
                            transport_errors.setdefault(type(exc).__name__, f"{exc.request.url.path}: {exc}")
                        continue
                    with lock:
                        statuses[answer.status_code] += 1
                        if answer.status_code >= 500:
                            server_errors.append(f"{answer.request.method} {answer.request.url.path}: "
                                                 f"{answer.status_code} {answer.text[:200]}")

        threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        print(f"{'t (s)':>6} {'requests':>9} {'5xx':>4} {'stored':>8} {'lag (s)':>8}  memory (MB)")
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.report_every)
            with psycopg.connect(database_url) as conn:
                lag = marts_lag_seconds(conn)
                stored = conn.execute("select count(*) from agent_sessions").fetchone()[0]
            with lock:
                total, errors = sum(v for k, v in statuses.items() if isinstance(k, int)), len(server_errors)
            memory = ", ".join(f"{name} {mb:.0f}" for name, mb in sorted(memory_mb(platform.pid).items()))
            print(f"{time.monotonic() - started:6.0f} {total:9d} {errors:4d} {stored:8d} {lag:8.1f}  {memory}",
                  flush=True)
        stop.set()
        for thread in threads:
            thread.join(90)
        print("answers:", dict(sorted(statuses.items(), key=str)))
        for kind, example in transport_errors.items():
            print(f"no answer ({kind}), e.g. {example}")
        for line in server_errors[:20]:
            print("5xx:", line)
        if server_errors:
            sys.exit(1)
    finally:
        stop.set()
        platform.send_signal(signal.SIGTERM)
        try:
            platform.wait(timeout=90)
        except subprocess.TimeoutExpired:
            platform.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
