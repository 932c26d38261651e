"""Freshness: seconds from ingesting an anomalous session to seeing it at
GET /v1/agents/{name}/anomalies, through the platform as deployed.

    .venv/bin/python bench/freshness.py [--trials 5] [--history-days 3]

Starts `bagula run` (default settings: sensor every 10 s, runs queued one at a
time, each run builds the marts incrementally, then detection, then alerts) on a
throw-away project-local PostgreSQL, backfills a few days of simulated history
through the API, waits until the sensor has judged it, then sends one session
at a time with a cost spike (6x tokens, started now) and polls the anomalies
endpoint until the session is listed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bagula.localdb import free_port  # noqa: E402
from simulator.agents import customer_support  # noqa: E402
from simulator.faults import Injection  # noqa: E402

AGENT = "customer-support-agent"


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.25)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--history-days", type=float, default=3.0)
    parser.add_argument("--keep-log", type=Path, default=None, help="copy the platform's log here")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="bagula-freshness-"))
    data_dir.chmod(0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "BAGULA_DATABASE_URL"}
    env |= {"BAGULA_DATA_DIR": str(data_dir), "BAGULA_LOCAL_DB_PORT": str(free_port()),
            "BAGULA_DAGSTER_PORT": str(free_port()), "BAGULA_SUPERSET_PORT": str(free_port())}
    log = data_dir / "run.log"
    platform = subprocess.Popen([sys.executable, "-m", "bagula", "run", "--port", str(port)],
                                env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        key = wait(lambda: "shown once): " in log.read_text() and log.read_text().split("shown once): ")[1].split()[0],
                   120, "the platform to start")
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        wait(lambda: _ok(client, "/readyz"), 60, "the API")

        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "bagula", "simulate", "--days", str(args.history_days),
                        "--seed", "5", "--agents", "support", "--api-key", key, "--endpoint", base,
                        "--no-progress"], check=True, env=env, capture_output=True)
        sent = sum(a["sessionCount"] for a in client.get("/v1/agents").json()["agents"])
        print(f"history: {sent} sessions over {args.history_days:g} days, sent in {time.monotonic() - started:.1f} s")
        wait(lambda: _judged(client) >= sent, 600, "the sensor to judge the history")
        print(f"history in the marts {time.monotonic() - started:.1f} s after the first send")
        time.sleep(20)  # let that run's detection and alert steps finish

        latencies = []
        for trial in range(args.trials):
            now_ms = time.time() * 1000
            spike = Injection("cost_spike", AGENT, now_ms - 1, float("inf"))
            [produced] = customer_support(random.Random(1000 + trial), now_ms, [spike])
            session_id = produced.session["sessionId"]
            sent_at = time.monotonic()
            response = client.post("/v1/sessions/ingest", json={"sessions": [produced.session]})
            assert response.status_code == 200, response.text
            wait(lambda sid=session_id: _listed(client, sid), 300, f"session {session_id} at /anomalies")
            latencies.append(time.monotonic() - sent_at)
            print(f"trial {trial + 1}: anomaly visible {latencies[-1]:.1f} s after ingest")
            time.sleep(random.Random(trial).uniform(0, 10))  # land at different points of the sensor's tick
        print(f"freshness over {len(latencies)} trials: median {statistics.median(latencies):.1f} s, "
              f"max {max(latencies):.1f} s (target: 60 s)")
    finally:
        platform.send_signal(signal.SIGTERM)
        try:
            platform.wait(timeout=60)
        except subprocess.TimeoutExpired:
            platform.kill()
        if args.keep_log:
            shutil.copy(log, args.keep_log)
        shutil.rmtree(data_dir, ignore_errors=True)


def _ok(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def _judged(client: httpx.Client) -> int:
    metrics = client.get(f"/v1/agents/{AGENT}/metrics", params={"window": "7d"})
    return metrics.json().get("totalSessions", 0) if metrics.status_code == 200 else 0


def _listed(client: httpx.Client, session_id: str) -> bool:
    page = client.get(f"/v1/agents/{AGENT}/anomalies", params={"type": "cost_spike", "limit": 20})
    return page.status_code == 200 and any(a["sessionId"] == session_id for a in page.json()["anomalies"])


if __name__ == "__main__":
    main()
