"""Freshness: seconds from ingesting a fault to seeing its incident at GET /v1/agents/{name}/incidents,
through the platform as deployed.

    .venv/bin/python bench/freshness.py [--trials 10] [--history-days 2] [--burst 6]

Starts `bagula run` with its defaults (the live path `bagula pipeline live` polling every
0.5 s; Dagster's sensor every 10 s standing aside while the live path keeps up) on a
throw-away project-local PostgreSQL, backfills simulated history through the API, waits
until it is judged, then per trial sends one request with a burst of sessions carrying a
cost spike (6x tokens, started now: the few sessions an incident needs to open) and polls
the incidents endpoint until a new incident is listed; the incident is then resolved by
hand so the next trial opens its own. Target (issue 15): median <= 10 s, p95 <= 20 s.
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
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--history-days", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=6, help="faulty sessions per trial")
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
        time.sleep(15)  # let detection and incident grouping of the history finish

        latencies = []
        for trial in range(args.trials):
            now_ms = time.time() * 1000
            spike = Injection("cost_spike", AGENT, now_ms - 1, float("inf"))
            rng = random.Random(1000 + trial)
            burst = [customer_support(rng, now_ms + i * 1000, [spike])[0].session for i in range(args.burst)]
            known = {i["incidentId"] for i in _incidents(client)}
            sent_at = time.monotonic()
            response = client.post("/v1/sessions/ingest", json={"sessions": burst})
            assert response.status_code == 200, response.text
            opened = wait(lambda known=known: [i for i in _incidents(client) if i["incidentId"] not in known
                                   and i["kind"] == "cost_spike"], 300, "the incident")
            latencies.append(time.monotonic() - sent_at)
            print(f"trial {trial + 1}: incident {opened[0]['incidentId'][:8]} visible "
                  f"{latencies[-1]:.1f} s after ingest ({opened[0]['summary'][:70]})", flush=True)
            resolved = client.post(f"/v1/incidents/{opened[0]['incidentId']}/resolve")
            assert resolved.status_code == 200, resolved.text
            time.sleep(random.Random(trial).uniform(1, 5))  # land at different points of the poll
        ordered = sorted(latencies)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        print(f"freshness over {len(latencies)} trials: median {statistics.median(latencies):.1f} s, "
              f"p95 {p95:.1f} s, max {max(latencies):.1f} s (targets: median 10 s, p95 20 s)")
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


def _incidents(client: httpx.Client) -> list[dict]:
    page = client.get(f"/v1/agents/{AGENT}/incidents", params={"status": "open", "limit": 50})
    return page.json()["incidents"] if page.status_code == 200 else []


if __name__ == "__main__":
    main()
