"""Scale on one machine: the platform against a history of N sessions.

    .venv/bin/python bench/scale.py --sessions 1000000     # minutes: load, build, detect, measure
    .venv/bin/python bench/scale.py --sessions 10M         # needs about 140 GB of disk (14 KB a session)
    .venv/bin/python bench/scale.py --report               # the table of every size measured so far

Each size lives in its own PostgreSQL cluster under --root (default /var/tmp/bagula-scale/SIZE),
kept between runs: a run resumes where the previous one stopped (history is loaded in chunks,
each recorded in the same transaction as its rows; builds resume from the marts' watermark) and
then measures again. What it does:

1. **Load.** Four projects, 36 agents (support, research and pipeline agents from
   ``simulator``), at a constant traffic of about 250,000 sessions a week, so 1M is four weeks
   of history and 10M forty: the windows the hot paths read (the last hour, day, week) hold the
   same traffic at every size, only the history grows. One template week of ~25,000 sessions
   is simulated, validated and encoded by the ingest store (``ingest_api.store.sessions.encode``:
   the API's own rows) and COPYed into ``bench_template``; every week of history is made of
   copies of it inside PostgreSQL (new session ids, shifted times: no client round trip per
   row), two chunks at a time, with a progress bar.
2. **Build and detect.** The marts are built as the sensor's runs build them (``dbt run`` up to
   the watermark), in steps of about a million sessions; detection judges the last week
   (rules, forest, failure modes, regressions, incidents).
3. **Measure**, with one client ingesting through the API the whole time: p50/p95 of every read
   endpoint through the real API; the SQL of every Superset chart (generated from the chart's
   query context and its dataset, with the dashboards' default time range, run against
   PostgreSQL; p95 per dashboard); then an incremental build after 1,000 new sessions and the
   detection of that batch; storage per session (raw, marts, indexes).

Results go to ``.bagula/bench/scale-SIZE.json``; the table shows every size found there, with
the ratio of the largest to the smallest. The load average is printed next to the figures: the
machine is shared.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import psycopg
import yaml
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bagula.localdb import LocalPostgres, free_port  # noqa: E402
from ingest_api import db  # noqa: E402
from ingest_api.paging import encode_cursor  # noqa: E402
from ingest_api.store import keys  # noqa: E402
from ingest_api.store.keys import Principal  # noqa: E402
from ingest_api.store.sessions import (  # noqa: E402
    LLM_COLUMNS,
    LLM_TYPES,
    SESSION_COLUMNS,
    SESSION_TYPES,
    TOOL_COLUMNS,
    TOOL_TYPES,
    TURN_COLUMNS,
    TURN_TYPES,
    copy_sql,
    encode,
)
from ingest_api.wire import validate_session  # noqa: E402
from simulator.samples import make_session  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / ".bagula" / "bench"
ASSETS = REPO / "superset" / "assets"
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
# The traffic of the bench's 36 agents: about 250,000 sessions a week (~1,500 an hour).
WEEK_SESSIONS = 250_000
# Simulated once; a week of history is this many copies of it (the simulator is the slow part).
TEMPLATE_SESSIONS = 25_000
# Copy r of a template session starts r * REPLICA_STEP_MS later than the template.
REPLICA_STEP_MS = 97_000
# Sessions at scale 1 in a week, per simulator profile (support; research; a pipeline run
# with its three children), measured: instance scales are derived from them.
PER_WEEK_AT_SCALE_1 = {"support": 5118, "research": 1323, "pipeline": 3258}
PROJECTS = [("acme-support", 0.40), ("globex-commerce", 0.27), ("initech-research", 0.20), ("umbrella-ops", 0.13)]
# Within a project: three support agents, two research agents, one pipeline (four agents).
INSTANCES = [
    ("support", 0.60 * 0.5),
    ("support", 0.60 * 0.3),
    ("support", 0.60 * 0.2),
    ("research", 0.15 * 0.6),
    ("research", 0.15 * 0.4),
    ("pipeline", 0.25),
]
PROFILE_AGENTS = {
    "support": ["customer-support-agent"],
    "research": ["research-agent"],
    "pipeline": ["pipeline-orchestrator", "retriever-agent", "writer-agent", "reviewer-agent"],
}
# The template week starts on a Monday; copies are shifted by whole weeks (and the offset to now).
TEMPLATE_ORIGIN_MS = 1_767_571_200_000  # 2026-01-05T00:00Z
RAW_TABLES = {  # table: (COPY columns, binary COPY types)
    "agent_sessions": (SESSION_COLUMNS, SESSION_TYPES),
    "session_turns": (TURN_COLUMNS, TURN_TYPES),
    "llm_calls": (LLM_COLUMNS, LLM_TYPES),
    "tool_calls": (TOOL_COLUMNS, TOOL_TYPES),
}
BENCH_SETTINGS = {
    # Sized for the machine (24 GiB shared with others); durable: fsync and synchronous commit on.
    "shared_buffers": "2GB",
    "effective_cache_size": "8GB",
    "maintenance_work_mem": "512MB",
    "work_mem": "32MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "random_page_cost": "1.1",
}
READ_SAMPLES = 40
CHART_SAMPLES = 5
TARGET_READ_P95_MS = 50
TARGET_DASHBOARD_P95_S = 1.0


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "").replace(",", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


def size_label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size % 1_000 == 0:
        return f"{size // 1_000}k"
    return str(size)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# ------------------------------------------------------------------------------------ cluster


@dataclass
class Bench:
    size: int
    root: Path
    cluster: LocalPostgres | None = None
    url: str = ""

    @property
    def label(self) -> str:
        return size_label(self.size)

    @property
    def base(self) -> Path:
        return self.root / self.label

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        port_file = self.base / "port"
        port = int(port_file.read_text()) if port_file.exists() else free_port()
        port_file.write_text(str(port))
        self.cluster = LocalPostgres(self.base / "pg", port, durable=True)
        fresh = not self.cluster.initialised
        self.cluster.init()
        self.cluster.start()
        with psycopg.connect(self.cluster.url("postgres"), autocommit=True) as conn:
            current = {k: conn.execute(f"show {k}").fetchone()[0] for k in BENCH_SETTINGS}
            restart = fresh or any(_normal(current[k]) != _normal(v) for k, v in BENCH_SETTINGS.items())
            if restart:
                for k, v in BENCH_SETTINGS.items():
                    conn.execute(f"alter system set {k} = '{v}'")
        if restart:
            self.cluster.stop()
            self.cluster.start()
        self.url = self.cluster.create_database("bagula")

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


def _normal(value: str) -> str:
    return value.lower().replace(" ", "")


# ------------------------------------------------------------------------------------ layout


@dataclass(frozen=True)
class Instance:
    project: str
    profile: str
    suffix: str
    scale: float
    seed: int


def layout(week_sessions: int) -> list[Instance]:
    instances = []
    n = 0
    for project, share in PROJECTS:
        for profile, inst_share in INSTANCES:
            n += 1
            expected = week_sessions * share * inst_share
            instances.append(Instance(project, profile, f"{n:02d}", expected / PER_WEEK_AT_SCALE_1[profile], 1000 + n))
    return instances


def agent_name(base: str, suffix: str) -> str:
    return f"{base}-{suffix}"


STATE_SQL = """
create schema if not exists bench_scale;
create table if not exists bench_scale.state (key text primary key, value jsonb not null);
create table if not exists bench_scale.chunks (
    week integer not null, lo bigint not null, hi bigint not null,
    sessions integer not null, txid bigint not null, loaded_at timestamptz not null default now(),
    primary key (week, lo)
);
create schema if not exists bench_template;
"""


def state_get(conn: psycopg.Connection, key: str):
    row = conn.execute("select value from bench_scale.state where key = %s", (key,)).fetchone()
    return row[0] if row else None


def state_set(conn: psycopg.Connection, key: str, value) -> None:
    conn.execute(
        "insert into bench_scale.state (key, value) values (%s, %s::jsonb)"
        " on conflict (key) do update set value = excluded.value",
        (key, json.dumps(value)),
    )


def prepare_schema(bench: Bench) -> dict:
    """Migrations, projects with keys, the bench's own tables; the keys (secrets) as state."""
    db.upgrade(bench.url)
    with psycopg.connect(bench.url, autocommit=True) as conn:
        conn.execute(STATE_SQL)
        projects = state_get(conn, "projects")
        if projects is None:
            projects = {}
            for name, _ in PROJECTS:
                new = keys.create_key(conn, name)
                projects[name] = {"project_id": str(new.project_id), "key_id": str(new.key_id), "secret": new.secret}
            state_set(conn, "projects", projects)
    return projects


# ------------------------------------------------------------------------------------ template


def _template_worker(args: tuple) -> int:
    """Simulate one agent instance's week, encode it as the ingest store does, COPY it into the
    template tables. Runs in a worker process."""
    url, inst, principal_ids = args
    from simulator.run import generate

    principal = Principal(uuid.UUID(principal_ids[0]), uuid.UUID(principal_ids[1]))
    rename = {base: agent_name(base, inst.suffix) for base in PROFILE_AGENTS[inst.profile]}
    produced = generate(
        [inst.profile], TEMPLATE_ORIGIN_MS, TEMPLATE_ORIGIN_MS + WEEK_MS, seed=inst.seed, scale=inst.scale
    )
    count = 0
    with psycopg.connect(url) as conn:
        for start in range(0, len(produced), 2000):
            rows = {table: [] for table in RAW_TABLES}
            for p in produced[start : start + 2000]:
                s = p.session
                s["agentName"] = rename.get(s["agentName"], s["agentName"])
                valid, errors = validate_session(s, check_values=False)
                if valid is None:
                    raise RuntimeError(f"simulated session invalid: {errors[:3]}")
                encoded = encode(principal, valid).rows
                offset = int(min(s["startTime"] - TEMPLATE_ORIGIN_MS, WEEK_MS - 1))
                for table, data in zip(
                    RAW_TABLES, (encoded.sessions, encoded.turns, encoded.llm_calls, encoded.tool_calls), strict=True
                ):
                    rows[table] += [(*row, offset) for row in data]
                count += 1
            with conn.transaction(), conn.cursor() as cur:
                for table, (columns, types) in RAW_TABLES.items():
                    with cur.copy(copy_sql(f"bench_template.{table}", f"{columns}, start_offset_ms")) as copy:
                        copy.set_types((*types, "int8"))
                        for row in rows[table]:
                            copy.write_row(row)
    return count


def ensure_template(bench: Bench, projects: dict) -> int:
    with psycopg.connect(bench.url, autocommit=True) as conn:
        done = state_get(conn, "template")
        if done is not None:
            return done["sessions"]
        for table in RAW_TABLES:
            conn.execute(f"drop table if exists bench_template.{table}")
            conn.execute(f"create table bench_template.{table} (like public.{table} including defaults)")
            conn.execute(f"alter table bench_template.{table} add column start_offset_ms bigint not null")
    instances = layout(TEMPLATE_SESSIONS)
    log(f"simulating the template week: {len(instances)} agent instances, ~{TEMPLATE_SESSIONS:,} sessions")
    jobs = [
        (bench.url, inst, (projects[inst.project]["key_id"], projects[inst.project]["project_id"]))
        for inst in instances
    ]
    # Largest first, so the two workers finish together.
    jobs.sort(key=lambda j: -j[1].scale * PER_WEEK_AT_SCALE_1[j[1].profile])
    total = 0
    with (
        multiprocessing.get_context("spawn").Pool(2) as pool,
        tqdm(total=len(jobs), unit="agent", desc="template week") as bar,
    ):
        for count in pool.imap_unordered(_template_worker, jobs):
            total += count
            bar.update(1)
    with psycopg.connect(bench.url, autocommit=True) as conn:
        for table in RAW_TABLES:
            conn.execute(f"create index on bench_template.{table} (start_offset_ms)")
            conn.execute(f"analyze bench_template.{table}")
        state_set(conn, "template", {"sessions": total})
    log(f"template week: {total:,} sessions")
    return total


# ------------------------------------------------------------------------------------ history

REPLICA_ID_SQL = """
create or replace function bench_scale.replica_id(id uuid, week integer, replica integer) returns uuid
    language sql immutable
    as $$ select case when id is null or (week = 0 and replica = 0) then id
                      else md5(id::text || ':' || week || ':' || replica)::uuid end $$;
"""


def _replicate_sql(table: str, columns: str) -> str:
    """INSERT ... SELECT of one table's template rows with start_offset_ms in [lo, hi), each
    ``replicas`` times: new ids for (week, replica), times shifted by ``shift`` plus the replica's step."""
    shift = f"make_interval(secs => (%(shift)s + r * {REPLICA_STEP_MS}) / 1000.0)"
    exprs = []
    for column in (c.strip() for c in columns.split(",")):
        if column in ("session_id", "parent_session_id"):
            exprs.append(f"bench_scale.replica_id({column}, %(week)s, r)")
        elif column in ("start_time", "end_time", '"timestamp"'):
            exprs.append(f"{column} + {shift}")
        else:
            exprs.append(column)
    return (
        f"insert into {table} ({columns}) select {', '.join(exprs)} from bench_template.{table}"
        " cross join generate_series(0, %(replicas)s - 1) as r"
        " where start_offset_ms >= %(lo)s and start_offset_ms < %(hi)s"
    )


def _load_chunk(url: str, week: int, lo: int, hi: int, shift_ms: int, replicas: int) -> int:
    params = {"week": week, "lo": lo, "hi": hi, "shift": shift_ms, "replicas": replicas}
    with psycopg.connect(url) as conn, conn.transaction():
        # The loader's commits need not wait for the disk: a crash loses whole chunks, which
        # the next run loads again (the chunk's row is in the same transaction).
        conn.execute("set local synchronous_commit = off")
        conn.execute(
            "insert into session_ledger (project_id, session_id, start_time)"
            " select project_id, bench_scale.replica_id(session_id, %(week)s, r),"
            f" start_time + make_interval(secs => (%(shift)s + r * {REPLICA_STEP_MS}) / 1000.0)"
            " from bench_template.agent_sessions cross join generate_series(0, %(replicas)s - 1) as r"
            " where start_offset_ms >= %(lo)s and start_offset_ms < %(hi)s",
            params,
        )
        count = 0
        for table, (columns, _) in RAW_TABLES.items():
            cur = conn.execute(_replicate_sql(table, columns), params)
            if table == "agent_sessions":
                count = cur.rowcount
        conn.execute(
            "insert into bench_scale.chunks (week, lo, hi, sessions, txid)"
            " values (%s, %s, %s, %s, pg_current_xact_id()::text::bigint)",
            (week, lo, hi, count),
        )
    return count


def plan_chunks(end_ms: int, weeks: int, limit_ms: int) -> list[tuple[int, int, int, int]]:
    """(week, lo, hi, shift) of every chunk: whole template days for the weeks of history
    ending at ``end_ms``, then pieces of at most a day from ``end_ms`` up to ``limit_ms`` (a
    later run's top-up to its now)."""
    origin = end_ms - weeks * WEEK_MS
    chunks = []
    for week in range(weeks):
        shift = origin + week * WEEK_MS - TEMPLATE_ORIGIN_MS
        for day in range(7):
            chunks.append((week, day * DAY_MS, (day + 1) * DAY_MS, shift))
    at = end_ms
    while at < limit_ms:
        k = (at - origin) // WEEK_MS
        week_start = origin + k * WEEK_MS
        lo = at - week_start
        hi = min(lo + DAY_MS, limit_ms - week_start, WEEK_MS)
        if hi <= lo:
            break
        chunks.append((int(k), int(lo), int(hi), int(week_start - TEMPLATE_ORIGIN_MS)))
        at = week_start + hi
    return chunks


def history_shape(size: int, template: int) -> tuple[int, int]:
    """(weeks, copies of the template per week) for ``size`` sessions at the bench's traffic."""
    week_sessions = min(WEEK_SESSIONS, size)
    replicas = max(1, round(week_sessions / template))
    return max(1, round(size / (replicas * template))), replicas


def load_history(bench: Bench, template: int) -> int:
    weeks, replicas = history_shape(bench.size, template)
    # The newest copies start (replicas - 1) steps after their template: history ends early
    # enough that none starts in the future.
    margin = replicas * REPLICA_STEP_MS + 60_000
    with psycopg.connect(bench.url, autocommit=True) as conn:
        conn.execute(REPLICA_ID_SQL)
        end_ms = state_get(conn, "end_ms")
        if end_ms is None:
            end_ms = (int(time.time() * 1000) - margin) // 60_000 * 60_000
            state_set(conn, "end_ms", end_ms)
        done = {(w, lo) for w, lo in conn.execute("select week, lo from bench_scale.chunks")}
    todo = [c for c in plan_chunks(end_ms, weeks, int(time.time() * 1000) - margin) if (c[0], c[1]) not in done]
    if not todo:
        return 0
    log(
        f"loading {len(todo)} chunks of history: {weeks} week(s) x {replicas} copies of the template week,"
        f" ending {datetime.fromtimestamp(end_ms / 1000, timezone.utc):%Y-%m-%d %H:%M}Z (then topped up to now)"
    )
    loaded = 0
    with ThreadPoolExecutor(2) as pool, tqdm(total=len(todo), unit="chunk", desc="history") as bar:
        for count in pool.map(lambda c: _load_chunk(bench.url, *c, replicas), todo):
            loaded += count
            bar.update(1)
            bar.set_postfix(sessions=f"{loaded:,}")
    with psycopg.connect(bench.url, autocommit=True) as conn:
        log("vacuum analyze (steady state: visibility map set, statistics current)")
        conn.execute("vacuum (analyze) agent_sessions, session_turns, llm_calls, tool_calls, session_ledger")
        # The copies bypassed the ingest store, which keeps the per-agent counts: recount them.
        conn.execute("select bagula_recount_agents(project_id) from projects")
    return loaded


# ------------------------------------------------------------------------------------ marts


def dbt(bench: Bench, *args: str, upto: int | None = None) -> tuple[bool, float, float]:
    """dbt as the platform's runs invoke it (every connection bounded at ``upto``), in a
    subprocess with its own target folder; (success, wall seconds, models' summed seconds)."""
    from orchestration import watermark
    from orchestration.dbt import PROJECT_DIR, dbt_env

    target = bench.base / "dbt-target"
    env = {
        **os.environ,
        **watermark.bounded_env(dbt_env(bench.url), upto),
        "DBT_TARGET_PATH": str(target),
        "DBT_LOG_PATH": str(bench.base / "dbt-logs"),
    }
    started = time.perf_counter()
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            *args,
            "--project-dir",
            str(PROJECT_DIR),
            "--profiles-dir",
            str(PROJECT_DIR),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-2000:], file=sys.stderr)
        return False, wall, 0.0
    results = json.loads((target / "run_results.json").read_text())
    models = sum(r["execution_time"] for r in results["results"] if r["unique_id"].startswith("model."))
    return True, wall, models


def build_history(bench: Bench) -> float:
    """The marts up to everything loaded, in steps of about a million sessions, each an
    incremental build like the sensor's runs (models, no tests); seconds it took."""
    from orchestration import watermark

    with psycopg.connect(bench.url, autocommit=True) as conn:
        built = watermark.of_marts(conn)
        chunks = conn.execute(
            "select txid, sessions from bench_scale.chunks where txid >= %s order by txid", (built,)
        ).fetchall()
        current = watermark.current(conn)
    steps, pending = [], 0
    for i, (txid, sessions) in enumerate(chunks):
        pending += sessions
        if pending >= 1_000_000 or i == len(chunks) - 1:
            steps.append(txid + 1)
            pending = 0
    if not steps or steps[-1] < current:
        steps.append(current)  # and whatever the API stored in earlier runs
    log(f"building the marts over {sum(s for _, s in chunks):,} new sessions in {len(steps)} step(s)")
    started = time.perf_counter()
    for upto in tqdm(steps, unit="step", desc="marts"):
        ok, _, _ = dbt(bench, "run", "--quiet", upto=upto)
        if not ok:
            raise SystemExit("dbt run failed (output above)")
    elapsed = time.perf_counter() - started
    with psycopg.connect(bench.url, autocommit=True) as conn:
        conn.execute("vacuum (analyze)")
    return elapsed


def compress_history(bench: Bench) -> None:
    """What TimescaleDB's compression policy (migration 0008) does to chunks older than its
    interval, done now: the steady state of a database with weeks of history."""
    with psycopg.connect(bench.url, autocommit=True) as conn:
        if not conn.execute("select exists (select 1 from pg_extension where extname = 'timescaledb')").fetchone()[0]:
            return
        policies = conn.execute(
            "select hypertable_name, config ->> 'compress_after' from timescaledb_information.jobs"
            " where proc_name = 'policy_compression'"
        ).fetchall()
        chunks = [
            (table, c)
            for table, after in policies
            for (c,) in conn.execute(
                "select c from show_chunks(%s::regclass, older_than => %s::interval) as c"
                " where not exists (select 1 from timescaledb_information.chunks i where i.is_compressed"
                " and format('%%I.%%I', i.chunk_schema, i.chunk_name)::regclass = c)",
                (table, after),
            ).fetchall()
        ]
        if not chunks:
            return
        log(f"compressing {len(chunks)} chunk(s) older than the compression policy's interval")
        for _, chunk in tqdm(chunks, unit="chunk", desc="compress"):
            conn.execute("select compress_chunk(%s::regclass, if_not_compressed => true)", (chunk,))
        conn.execute("vacuum (analyze)")


def detect_history(bench: Bench, judge: bool = True) -> float | None:
    """Detection over the last week of history (what the runs would have judged), once; without
    ``judge`` the history only counts as judged (no verdicts: quicker, for the other figures)."""
    from orchestration import watermark
    from orchestration.detection import detect

    with psycopg.connect(bench.url, autocommit=True) as conn:
        if state_get(conn, "detected") is not None:
            return None
        if not judge:
            log("history not judged (--no-detect): the verdict endpoints read no verdicts")
            watermark.set_judged(conn, watermark.of_marts(conn))
            return None
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=d) for d in range(7, -1, -1)]
    log(f"detection over {days[0]}..{days[-1]}")
    started = time.perf_counter()
    with psycopg.connect(bench.url, autocommit=True) as conn:
        upto = watermark.of_marts(conn)
        summary = detect.detect_days(conn, days)
        watermark.set_judged(conn, upto)
        elapsed = time.perf_counter() - started
        state_set(conn, "detected", {"seconds": elapsed, "summary": summary.as_metadata()})
    log(f"detection: {elapsed:.0f} s, {summary.as_metadata()}")
    return elapsed


# ------------------------------------------------------------------------------------ API


class Api:
    """`bagula api` on this machine against the bench's database."""

    def __init__(self, database_url: str, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bagula", "api", "--port", str(self.port), "--workers", str(workers)],
            # The reads and the ingesting client share one key: no rate limit between them.
            env={**os.environ, "BAGULA_DATABASE_URL": database_url, "BAGULA_RATE_LIMIT_PER_KEY": "100000/second"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise SystemExit("bagula api exited")
            time.sleep(0.2)  # polling a server's readiness: no event to wait on
        raise SystemExit("bagula api did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def live_batch(rng: random.Random, agents: list[str], size: int = 50) -> list[dict]:
    """Sessions that are happening now (as bench/ingest.py sends them: simulator.samples)."""
    now = int(time.time() * 1000)
    batch = []
    for _ in range(size):
        s = make_session(rng, agent_name=rng.choice(agents), start_ms=now - rng.randrange(60_000, 600_000))
        s["sessionId"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        batch.append(s)
    return batch


class Ingester(threading.Thread):
    """One client posting gzip 50-session batches to the API as fast as it answers."""

    def __init__(self, api: Api, secret: str, agents: list[str]) -> None:
        super().__init__(daemon=True)
        self.api, self.secret, self.agents = api, secret, agents
        self.halt = threading.Event()
        self.sessions = 0
        self.errors = 0
        self.elapsed = 0.0

    def run(self) -> None:
        rng = random.Random(time.time_ns())
        headers = {
            "Authorization": f"Bearer {self.secret}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        started = time.perf_counter()
        with httpx.Client(base_url=self.api.url, headers=headers, timeout=60) as http:
            while not self.halt.is_set():
                body = gzip.compress(orjson.dumps({"sessions": live_batch(rng, self.agents)}), compresslevel=6)
                response = http.post("/v1/sessions/ingest", content=body)
                if response.status_code == 200:
                    self.sessions += response.json().get("stored", 0)
                else:
                    self.errors += 1
        self.elapsed = time.perf_counter() - started

    def stop(self) -> float:
        self.halt.set()
        self.join()
        return self.sessions / self.elapsed if self.elapsed else 0.0


def read_cases(conn: psycopg.Connection, project: dict) -> list[tuple[str, list[tuple[str, dict]]]]:
    """(endpoint label, [(path, params)]): the read endpoints, each with varied arguments."""
    rng = random.Random(3)
    project_id = project["project_id"]
    agents = [
        r[0]
        for r in conn.execute(
            "select agent_name from agent_sessions where project_id = %s and start_time > now() - interval '1 day'"
            " group by 1 order by count(*) desc",
            (project_id,),
        ).fetchall()
    ]
    top = agents[: max(1, len(agents) // 2)]
    ids = [
        str(r[0])
        for r in conn.execute(
            "select session_id from agent_sessions tablesample system (0.5) where project_id = %s limit 200",
            (project_id,),
        ).fetchall()
    ]
    users = [
        r[0]
        for r in conn.execute(
            "select user_id from agent_sessions where project_id = %s and user_id is not null"
            " and start_time > now() - interval '7 days' limit 200",
            (project_id,),
        ).fetchall()
    ] or ["nobody"]
    oldest, newest = conn.execute(
        "select min(start_time), max(start_time) from agent_sessions where project_id = %s", (project_id,)
    ).fetchone()
    words = ["refund", "invoice", "shipping", "password reset", "order", "timeout", "summarise", "report"]
    n = READ_SAMPLES

    def deep_cursor() -> str:
        # A page half-way into the agent's history: keyset pagination makes it a seek.
        at = oldest + (newest - oldest) * rng.uniform(0.2, 0.8)
        return encode_cursor(at, uuid.UUID(int=(1 << 128) - 1))

    def agent() -> str:
        return rng.choice(top)

    def since(hours: int) -> str:
        return (datetime.now(timezone.utc) - timedelta(hours=hours)).isoformat()

    cases = [
        ("GET /v1/agents", [("/v1/agents", {})] * n),
        ("sessions list", [(f"/v1/agents/{agent()}/sessions", {}) for _ in range(n)]),
        ("sessions list, limit 500", [(f"/v1/agents/{agent()}/sessions", {"limit": 500}) for _ in range(n // 2)]),
        (
            "sessions list, status=failure",
            [(f"/v1/agents/{agent()}/sessions", {"status": "failure"}) for _ in range(n)],
        ),
        (
            "sessions list, userId",
            [(f"/v1/agents/{agent()}/sessions", {"userId": rng.choice(users)}) for _ in range(n)],
        ),
        ("sessions list, last 24h", [(f"/v1/agents/{agent()}/sessions", {"since": since(24)}) for _ in range(n)]),
        ("sessions list, deep page", [(f"/v1/agents/{agent()}/sessions", {"cursor": deep_cursor()}) for _ in range(n)]),
        ("one session", [(f"/v1/sessions/{rng.choice(ids)}", {}) for _ in range(n)]),
        ("metrics 1h", [(f"/v1/agents/{agent()}/metrics", {"window": "1h"}) for _ in range(n)]),
        ("metrics 24h", [(f"/v1/agents/{agent()}/metrics", {"window": "24h"}) for _ in range(n)]),
        ("metrics 7d", [(f"/v1/agents/{agent()}/metrics", {"window": "7d"}) for _ in range(n)]),
        ("anomalies", [(f"/v1/agents/{agent()}/anomalies", {}) for _ in range(n)]),
        (
            "anomalies, unresolved critical",
            [(f"/v1/agents/{agent()}/anomalies", {"severity": "critical", "resolved": "false"}) for _ in range(n)],
        ),
        ("regressions", [(f"/v1/agents/{agent()}/regressions", {}) for _ in range(n)]),
        ("incidents", [("/v1/incidents", {}) for _ in range(n)]),
        ("agent's incidents", [(f"/v1/agents/{agent()}/incidents", {}) for _ in range(n)]),
        ("search ?q=", [("/v1/sessions", {"q": rng.choice(words)}) for _ in range(n)]),
        (
            "search ?q= + agent + 24h",
            [("/v1/sessions", {"q": rng.choice(words), "agentName": agent(), "since": since(24)}) for _ in range(n)],
        ),
        (
            "search ?q= + agent + status=failure",
            [("/v1/sessions", {"q": rng.choice(words), "agentName": agent(), "status": "failure"}) for _ in range(n)],
        ),
        ("search, no q (newest)", [("/v1/sessions", {}) for _ in range(n)]),
    ]
    return cases


def measure_reads(api: Api, secret: str, cases) -> dict[str, dict]:
    out: dict[str, dict] = {}
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=api.url, headers=headers, timeout=120) as http:
        for label, calls in tqdm(cases, unit="endpoint", desc="reads"):
            for path, params in calls[:3]:  # warm the pool, the plans and the cache
                http.get(path, params=params)
            timings, statuses = [], set()
            for path, params in calls:
                started = time.perf_counter()
                response = http.get(path, params=params)
                timings.append((time.perf_counter() - started) * 1000)
                statuses.add(response.status_code)
            out[label] = {
                "p50_ms": statistics.median(timings),
                "p95_ms": percentile(timings, 95),
                "statuses": sorted(statuses),
            }
    return out


# ------------------------------------------------------------------------------------ charts


def _read_assets(folder: str) -> dict[str, dict]:
    found = {}
    for path in sorted((ASSETS / folder).glob("*.yaml")):
        item = yaml.safe_load(path.read_text())
        found[item["uuid"]] = item
    return found


GRAINS = {"PT1H": "hour", "P1D": "day", "P1W": "week", "P1M": "month"}


class _NoSearch:
    rank = None
    where = None


def _render(sql: str, session_id: str | None) -> str:
    """A virtual dataset's Jinja as Superset renders it with the dashboards' defaults (no search
    words; the session filter set to ``session_id``)."""
    import jinja2

    def filter_values(column: str, default=None, remove_filter: bool = False) -> list:
        return [session_id] if column == "session_id" and session_id else []

    env = jinja2.Environment()
    return env.from_string(sql).render(
        filter_values=filter_values, bagula_search=lambda *a, **k: _NoSearch(), url_param=lambda *a, **k: None
    )


def chart_queries(session_id: str) -> dict[str, list[tuple[str, str]]]:
    """{dashboard title: [(chart name, SQL)]}: each chart's query as Superset builds it from its
    query context and dataset (metrics and calculated columns by expression, time grains,
    filters, order, row limit), with the dashboard's default time range ("Last week") and, on
    the session detail dashboard, its session filter."""
    datasets = _read_assets("datasets")
    charts = {c["uuid"]: c for c in _read_assets("charts").values()}
    dashboards: dict[str, list[tuple[str, str]]] = {}
    for dashboard in _read_assets("dashboards").values():
        chart_ids = [
            v["meta"]["uuid"]
            for v in dashboard["position"].values()
            if isinstance(v, dict) and v.get("type") == "CHART"
        ]
        ranged = any(
            f.get("filterType") == "filter_time"
            for f in (dashboard.get("metadata") or {}).get("native_filter_configuration", [])
        )
        queries = []
        for chart_id in chart_ids:
            chart = charts[chart_id]
            ds = datasets[chart["dataset_uuid"]]
            context = json.loads(chart["query_context"])
            for q in context["queries"]:
                queries.append((chart["slice_name"], _chart_sql(ds, q, ranged, session_id)))
        dashboards[dashboard["dashboard_title"]] = queries
    return dashboards


def _chart_sql(ds: dict, q: dict, ranged: bool, session_id: str) -> str:
    metrics = {m["metric_name"]: m["expression"] for m in ds.get("metrics") or []}
    expressions = {c["column_name"]: c["expression"] for c in ds.get("columns") or [] if c.get("expression")}
    source = (
        f"({_render(ds['sql'], session_id)}) as virtual_table"
        if ds.get("sql")
        else f"{ds['schema']}.{ds['table_name']}"
    )

    def column(c) -> tuple[str, str]:
        if isinstance(c, dict):
            name, expr = c.get("label") or c["sqlExpression"], c["sqlExpression"]
            expr = expressions.get(expr, expr)
            if c.get("timeGrain") in GRAINS:
                expr = f"date_trunc('{GRAINS[c['timeGrain']]}', {expr})"
            return expr, name
        return expressions.get(c, c), c

    def metric(m) -> tuple[str, str]:
        if isinstance(m, str):
            return metrics[m], m
        if m.get("expressionType") == "SQL":
            return m["sqlExpression"], m.get("label") or "metric"
        return f"{m['aggregate']}({m['column']['column_name']})", m.get("label") or "metric"

    cols = [column(c) for c in q.get("columns") or []]
    mets = [metric(m) for m in q.get("metrics") or []]
    where = []
    for f in q.get("filters") or []:
        col = expressions.get(f["col"], f["col"])
        if f["op"] == "TEMPORAL_RANGE":
            if ranged:  # "Last week": from seven days before today's midnight to it
                where.append(
                    f"{col} >= date_trunc('day', now()) - interval '7 days' and {col} < date_trunc('day', now())"
                )
        elif f["op"] == "IS FALSE":
            where.append(f"{col} is false")
        elif f["op"] == "IS TRUE":
            where.append(f"{col} is true")
        elif f["op"] == "IN":
            where.append(f"{col} in ({', '.join(repr(v) for v in f['val'])})")
    extra_where = (q.get("extras") or {}).get("where")
    if extra_where:
        where.append(_render(extra_where, session_id))
    if extra_where and "session_id" in extra_where:
        where.append(f"session_id = '{session_id}'")
    select = [f'{e} as "{n}"' for e, n in cols] + [f'{e} as "{n}"' for e, n in mets]
    sql = f"select {', '.join(select)} from {source}"
    if where:
        sql += " where " + " and ".join(f"({w})" for w in where)
    if mets and cols:
        sql += " group by " + ", ".join(e for e, _ in cols)
    order = []
    for key, ascending in q.get("orderby") or []:
        if not isinstance(key, str):
            expr = metric(key)[0]
        elif mets and key in metrics:  # aggregate mode orders by metrics; raw mode by columns
            expr = metrics[key]
        else:
            expr = expressions.get(key, key)
        order.append(f"{expr} {'asc' if ascending else 'desc'}")
    if order:
        sql += " order by " + ", ".join(order)
    if q.get("row_limit"):
        sql += f" limit {int(q['row_limit'])}"
    return sql


def measure_charts(url: str, session_id: str) -> dict[str, dict]:
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set jit = off")  # as Superset's reader role has it (bagula.superset.ensure_reader_role)
        for title, queries in tqdm(chart_queries(session_id).items(), unit="dashboard", desc="charts"):
            per_chart: dict[str, list[float]] = {}
            failed = []
            for name, sql in queries:
                try:
                    conn.execute(sql).fetchall()  # warm
                except psycopg.Error as exc:
                    failed.append(f"{name}: {exc.diag.message_primary}")
                    continue
                for _ in range(CHART_SAMPLES):
                    started = time.perf_counter()
                    conn.execute(sql).fetchall()
                    per_chart.setdefault(name, []).append(time.perf_counter() - started)
            everything = [t for ts in per_chart.values() for t in ts]
            slowest = max(per_chart, key=lambda n: percentile(per_chart[n], 95)) if per_chart else None
            out[title] = {
                "charts": len(queries),
                "p95_s": percentile(everything, 95) if everything else None,
                "slowest_chart": slowest,
                "slowest_p95_s": percentile(per_chart[slowest], 95) if slowest else None,
                # Charts load side by side: the dashboard takes its slowest chart's time, at best.
                "failed": failed,
            }
    return out


# ------------------------------------------------------------------------------------ builds


def wait_for_watermark(conn: psycopg.Connection, txid: int) -> int:
    """The watermark once it has passed ``txid`` (transactions still running hold it back)."""
    from orchestration import watermark

    while (current := watermark.current(conn)) <= txid:
        time.sleep(0.05)  # the watermark moves when other transactions end: nothing to wait on
    return current


def measure_incremental(bench: Bench, api: Api, project: dict, agents: list[str]) -> dict:
    """Catch the marts and detection up, then 1,000 new sessions through the API, the
    incremental build that reads them and the detection that judges them."""
    from orchestration import watermark
    from orchestration.detection import detect

    with psycopg.connect(bench.url, autocommit=True) as conn:
        ok, _, _ = dbt(bench, "run", "--quiet", upto=watermark.current(conn))
        if not ok:
            raise SystemExit("catch-up build failed")
        days = watermark.touched_days(conn, watermark.judged(conn), watermark.of_marts(conn))
        detect.judge_new(conn, days)
        before = watermark.of_marts(conn)
    rng = random.Random(time.time_ns())  # new ids each run: a repeat would be duplicates
    headers = {"Authorization": f"Bearer {project['secret']}"}
    with httpx.Client(base_url=api.url, headers=headers, timeout=60) as http:
        for _ in range(20):
            response = http.post("/v1/sessions/ingest", json={"sessions": live_batch(rng, agents)})
            response.raise_for_status()
    with psycopg.connect(bench.url, autocommit=True) as conn:
        newest = conn.execute(
            "select max(ingest_txid) from agent_sessions where ingest_txid >= %s", (before,)
        ).fetchone()[0]
        upto = wait_for_watermark(conn, newest)
    ok, wall, models = dbt(bench, "run", "--quiet", upto=upto)
    if not ok:
        raise SystemExit("incremental build failed")
    with psycopg.connect(bench.url, autocommit=True) as conn:
        days = watermark.touched_days(conn, watermark.judged(conn), watermark.of_marts(conn))
        started = time.perf_counter()
        detect.judge_new(conn, days)
        detection = time.perf_counter() - started
    return {"build_wall_s": wall, "build_models_s": models, "detection_s": detection}


# ------------------------------------------------------------------------------------ storage


def measure_storage(url: str) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        # Stored now (the ledger also keeps the ids of erased sessions).
        sessions = conn.execute("select count(*) from agent_sessions").fetchone()[0]
        hyper = (
            {r[0] for r in conn.execute("select hypertable_name from timescaledb_information.hypertables").fetchall()}
            if conn.execute("select exists (select 1 from pg_extension where extname = 'timescaledb')").fetchone()[0]
            else set()
        )
        raw_total = raw_index = 0
        per_table = {}
        for table in [*RAW_TABLES, "session_ledger"]:
            if table in hyper:
                total, index = conn.execute(
                    "select total_bytes, index_bytes from hypertable_detailed_size(%s)", (table,)
                ).fetchone()
            else:
                total, index = conn.execute(
                    "select pg_total_relation_size(%s), pg_indexes_size(%s)", (table, table)
                ).fetchone()
            per_table[table] = {"bytes": total, "index_bytes": index}
            raw_total += total
            raw_index += index
        marts_total, marts_index = conn.execute(
            "select coalesce(sum(pg_total_relation_size(c.oid)), 0), coalesce(sum(pg_indexes_size(c.oid)), 0)"
            " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'marts' and c.relkind in ('r', 'm', 'p')"
        ).fetchone()
    return {
        "sessions": sessions,
        "raw_bytes": raw_total,
        "raw_index_bytes": raw_index,
        "marts_bytes": int(marts_total),
        "marts_index_bytes": int(marts_index),
        "tables": per_table,
    }


# ------------------------------------------------------------------------------------ run


def support_agents(conn: psycopg.Connection, project: dict) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select distinct agent_name from agent_sessions where project_id = %s and agent_name like"
            " 'customer-support-agent-%%'",
            (project["project_id"],),
        ).fetchall()
    ]


LIVE_PROJECT = "bench-live"


def live_project(conn: psycopg.Connection) -> dict:
    """The project the measuring client ingests into (made on first use)."""
    project = state_get(conn, LIVE_PROJECT)
    if project is None:
        new = keys.create_key(conn, LIVE_PROJECT)
        project = {"project_id": str(new.project_id), "key_id": str(new.key_id), "secret": new.secret}
        state_set(conn, LIVE_PROJECT, project)
    return project


def measure(bench: Bench, projects: dict, result: dict) -> None:
    """Fills ``result`` phase by phase (what was measured is kept if a later phase fails)."""
    name = PROJECTS[0][0]
    project = projects[name]
    with psycopg.connect(bench.url, autocommit=True) as conn:
        agents = support_agents(conn, project)
        # The ingesting client writes to a project of its own, outside the history: the windows
        # the reads, builds and detection look at (the last hour, day, week of the history's
        # projects) hold the same traffic in every run, not what earlier runs' clients sent.
        ingest_project = live_project(conn)
        ingest_agents = agents
        cases = read_cases(conn, project)
        session_id = str(
            conn.execute(
                "select session_id from marts.fct_sessions where started_at > now()"
                " - interval '1 day' and turn_count > 2 limit 1"
            ).fetchone()[0]
        )
    result["load_before"] = load_average()
    api = Api(bench.url)
    try:
        ingester = Ingester(api, ingest_project["secret"], ingest_agents)
        ingester.start()
        result["reads"] = measure_reads(api, project["secret"], cases)
        result["load_reads"] = load_average()
        result["charts"] = measure_charts(bench.url, session_id)
        result["load_charts"] = load_average()
        result["ingest_while_reading"] = ingester.stop()
        result["ingest_errors"] = ingester.errors
        log("incremental build after 1,000 new sessions, and its detection")
        result["incremental"] = measure_incremental(bench, api, project, agents)
        result["load_incremental"] = load_average()
    finally:
        api.stop()
    result["storage"] = measure_storage(bench.url)


def save(bench: Bench, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"scale-{bench.label}.json"
    result = {"size": bench.size, "label": bench.label, "measured_at": datetime.now(timezone.utc).isoformat(), **result}
    path.write_text(json.dumps(result, indent=1, default=str))
    return path


def table_lines(results: list[dict]) -> list[str]:
    """One table: a line per figure, a column per size, the ratio of the largest to the smallest."""
    results = sorted(results, key=lambda r: r["size"])
    rows: list[tuple[str, list]] = []

    def add(label: str, values: list) -> None:
        rows.append((label, values))

    def get(r: dict, *path):
        for key in path:
            if not isinstance(r, dict) or key not in r:
                return None
            r = r[key]
        return r

    add("sessions stored", [get(r, "storage", "sessions") or r["size"] for r in results])
    reads = list(dict.fromkeys(k for r in results for k in r.get("reads", {})))
    for label in reads:
        add(
            f"{label}: p50 / p95 ms",
            [
                (r["reads"][label]["p50_ms"], r["reads"][label]["p95_ms"]) if label in r.get("reads", {}) else None
                for r in results
            ],
        )
    for title in dict.fromkeys(k for r in results for k in r.get("charts", {})):
        add(
            f"dashboard '{title}': chart p95 s (slowest chart)",
            [
                (r["charts"][title]["p95_s"], r["charts"][title]["slowest_chart"])
                if title in r.get("charts", {})
                else None
                for r in results
            ],
        )
    add(
        "incremental build, 1,000 new sessions: wall s (models s)",
        [(get(r, "incremental", "build_wall_s"), get(r, "incremental", "build_models_s")) for r in results],
    )
    add("detection of that batch: s", [get(r, "incremental", "detection_s") for r in results])
    for key, label in [
        ("raw_bytes", "raw tables"),
        ("raw_index_bytes", "  of which indexes"),
        ("marts_bytes", "marts"),
        ("marts_index_bytes", "  of which indexes"),
    ]:
        add(
            f"storage per session, {label}: bytes",
            [
                get(r, "storage", key) / max(1, get(r, "storage", "sessions")) if get(r, "storage") else None
                for r in results
            ],
        )
    add("API ingest while reads ran (1 client): sessions/s", [r.get("ingest_while_reading") for r in results])
    add("build of the loaded history: s", [r.get("history_build_s") for r in results])
    add("load average (1/5/15 min) during reads", [r.get("load_reads") for r in results])

    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, (list, tuple)):
            a, b = v
            return f"{cell(a)} / {cell(b)}" if not isinstance(b, str) else f"{cell(a)} ({b})"
        if isinstance(v, str):
            return v
        if isinstance(v, int) or abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"

    def ratio(values: list) -> str:
        first, last = values[0], values[-1]
        if len(values) < 2 or first is None or last is None:
            return ""
        if isinstance(first, (list, tuple)):
            first, last = (
                first[-1] if not isinstance(first[-1], str) else first[0],
                (last[-1] if not isinstance(last[-1], str) else last[0]),
            )
        if isinstance(first, str) or not first:
            return ""
        return f"{last / first:.2f}x"

    header = ["", *[r["label"] for r in results]] + (
        [f"{results[-1]['label']} / {results[0]['label']}"] if len(results) > 1 else []
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, values in rows:
        cells = [label, *[cell(v) for v in values]] + ([ratio(values)] if len(results) > 1 else [])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report() -> None:
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("scale-*.json"))]
    if not results:
        print("no sizes measured yet")
        return
    print("\n".join(table_lines(results)))
    for r in results:
        for label, figures in r.get("reads", {}).items():
            if figures["p95_ms"] > TARGET_READ_P95_MS or figures["statuses"] != [200]:
                print(f"  {r['label']}: {label} p95 {figures['p95_ms']:.0f} ms, statuses {figures['statuses']}")
        for title, figures in r.get("charts", {}).items():
            if figures["failed"] or (figures["p95_s"] or 0) > TARGET_DASHBOARD_P95_S:
                print(f"  {r['label']}: dashboard {title!r} p95 {figures['p95_s']}, failed {figures['failed']}")


# Raw tables and marts with their indexes at 1M sessions (TimescaleDB compression on), and WAL.
BYTES_PER_SESSION = 14_000
WAL_BYTES = 5 * 2**30


def check_disk(bench: Bench) -> None:
    """Refuse a size this disk cannot hold, before loading hours of it."""
    if (bench.base / "pg").exists():
        return  # resuming: what is loaded already is on the disk
    bench.root.mkdir(parents=True, exist_ok=True)
    needed = bench.size * BYTES_PER_SESSION + WAL_BYTES
    free = shutil.disk_usage(bench.root).free
    if free < needed:
        raise SystemExit(
            f"{bench.label} sessions need about {needed / 2**30:.0f} GiB under {bench.root}"
            f" ({BYTES_PER_SESSION:,} bytes a session and WAL); {free / 2**30:.0f} GiB are free"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", nargs="?", help="sessions of history: 1M, 10M, 300k, ... (or --sessions)")
    parser.add_argument("--sessions", help="sessions of history (as the positional argument)")
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/bagula-scale"), help="where clusters live")
    parser.add_argument("--report", action="store_true", help="only print the table of the sizes measured so far")
    parser.add_argument("--load-only", action="store_true", help="load, build and detect; do not measure")
    parser.add_argument("--stop", action="store_true", help="stop the size's PostgreSQL at the end")
    parser.add_argument("--no-detect", action="store_true", help="do not judge the history (no verdicts)")
    args = parser.parse_args()
    size = args.sessions or args.size
    if args.report or not size:
        report()
        return
    bench = Bench(parse_size(size), args.root)
    check_disk(bench)
    bench.start()
    log(f"{bench.label}: PostgreSQL at {bench.cluster.url('bagula')}; load average {load_average()}")
    try:
        projects = prepare_schema(bench)
        template = ensure_template(bench, projects)
        started = time.perf_counter()
        loaded = load_history(bench, template)
        load_s = time.perf_counter() - started
        build_s = build_history(bench)
        compress_history(bench)
        detect_history(bench, judge=not args.no_detect)
        if args.load_only:
            return
        result: dict = {}
        try:
            measure(bench, projects, result)
        finally:
            if result:
                log(f"results so far: {save(bench, result)}")
        with psycopg.connect(bench.url, autocommit=True) as conn:
            result["history_load_s"] = load_s if loaded else state_get(conn, "history_load_s")
            result["history_build_s"] = build_s if loaded else state_get(conn, "history_build_s")
            if loaded:
                state_set(conn, "history_load_s", load_s)
                state_set(conn, "history_build_s", build_s)
            result["history_detection"] = state_get(conn, "detected") or "not judged (--no-detect)"
        path = save(bench, result)
        log(f"results: {path}")
        report()
    finally:
        if args.stop:
            bench.stop()


if __name__ == "__main__":
    main()
