"""Session search latency (GET /v1/sessions?q=...) on N sessions, and what indexing costs.

    .venv/bin/python bench/search.py                         # 100,000 sessions, own PostgreSQL
    .venv/bin/python bench/search.py --sessions 1000000 --templates 2000

1. Starts a throw-away PostgreSQL (or uses --database-url), applies the migrations, and COPYs
   --templates realistic sessions (simulator.samples, five turns, five LLM and five tool calls;
   each given words of its own from a Zipf-distributed vocabulary of 20,000 words, an order
   number and a customer in a tool result) through ingest_api.store.sessions.encode/SessionRows.
2. Builds the marts with dbt (`bagula transform`): the real session_search model indexes the
   templates. The time of that build, per 1,000 sessions, is what indexing costs the pipeline
   (the ingest path does not index).
3. Grows marts.session_search and marts.fct_sessions to --sessions rows with generate_series:
   copy k of template t gets a new id, a start time spread over 30 days, an agent, and words
   of its own appended to the template's document (an order number ORD-<n>, a customer
   CUS-<n>, three vocabulary words); then rebuilds the indexes and analyzes.
4. Times the search the API runs (ingest_api.store.search.search, in process) for a mix of
   queries, --repeat times each kind with different words, and prints p50/p95 per kind and
   over all of them.

For the scale benchmark: ``measure(database_url)`` times the same search on whatever the marts
of that database hold (queries made of its own words), and returns the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bagula.localdb import LocalPostgres, free_port  # noqa: E402
from ingest_api import db  # noqa: E402
from ingest_api.store import keys  # noqa: E402
from ingest_api.store import search as search_store  # noqa: E402
from ingest_api.store.keys import Principal  # noqa: E402
from ingest_api.store.sessions import SessionRows, copy_rows_sync, encode  # noqa: E402
from ingest_api.wire import validate_session  # noqa: E402
from orchestration.dbt import target_dir, transform  # noqa: E402
from simulator.samples import make_session  # noqa: E402

VOCABULARY = 20_000
AGENTS = ["customer-support-agent", "research-agent", "billing-agent", "triage-agent"]
START_MS = 1_764_000_000_000
SPREAD_MS = 30 * 86_400_000


def word(rank: int) -> str:
    """A pronounceable word for a vocabulary rank (stable, distinct, survives stemming apart)."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "zu", "pe", "do", "gi"]
    out, n = [], rank + 1
    while n:
        n, r = divmod(n, len(syllables))
        out.append(syllables[r])
    return "x" + "".join(out) + "q"


WORDS = [word(r) for r in range(VOCABULARY)]
CUMULATIVE = list(itertools.accumulate(1 / (r + 1) for r in range(VOCABULARY)))


def zipf_words(rng: random.Random, count: int) -> list[str]:
    """Words drawn from the vocabulary with Zipf(1) frequencies: a few common, a long tail."""
    return rng.choices(WORDS, cum_weights=CUMULATIVE, k=count)


def templates(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    sessions = []
    for i in range(count):
        s = make_session(rng, agent_name=AGENTS[i % len(AGENTS)], start_ms=START_MS + i * 1000)
        s["initialRequest"] += " " + " ".join(zipf_words(rng, 8))
        for turn in s["turns"]:
            turn["trigger"]["content"] += " " + " ".join(zipf_words(rng, 6))
            for call in turn["agentResponse"]["toolCalls"]:
                call["result"] = {
                    **(call.get("result") or {}),
                    "note": " ".join(zipf_words(rng, 10)),
                    "order": f"ORD-{rng.randrange(10**6):06d}",
                }
        sessions.append(s)
    return sessions


def load(database_url: str, sessions: list[dict]) -> uuid.UUID:
    with psycopg.connect(database_url) as conn:
        new = keys.create_key(conn, "bench-search")
    principal = Principal(new.key_id, new.project_id)
    with psycopg.connect(database_url) as conn:
        for i in range(0, len(sessions), 500):
            rows = SessionRows()
            for s in sessions[i : i + 500]:
                rows.extend(encode(principal, validate_session(s, check_values=False)[0]).rows)
            with conn.transaction(), conn.cursor() as cur:
                copy_rows_sync(cur, rows)
    return new.project_id


COPY_COLUMNS = """
    md5(k::text || ':bench')::uuid as session_id,
    to_timestamp((%(start)s + (k::bigint * 7919) %% %(spread)s) / 1000.0) as started_at,
    (%(agents)s::text[])[1 + k %% 4] as agent_name,
    'ORD-' || lpad((k %% 1000000)::text, 6, '0') as order_number,
    'CUS-' || (k %% 50000)::text as customer
"""


def grow(database_url: str, project_id: uuid.UUID, target: int, template_count: int, seed: int) -> None:
    """Copies of the indexed templates up to ``target`` sessions, each with words of its own."""
    extra = target - template_count
    if extra <= 0:
        return
    params = {
        "project": project_id,
        "extra": extra,
        "start": START_MS,
        "spread": SPREAD_MS,
        "templates": template_count,
        "agents": "{" + ",".join(AGENTS) + "}",
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("set maintenance_work_mem = '1GB'")
        conn.execute("set work_mem = '256MB'")
        conn.execute("create temporary table vocabulary (i integer primary key, w text not null)")
        conn.execute(
            "insert into vocabulary select i, w from unnest(%s::text[]) with ordinality as v (w, i)",
            (zipf_words(random.Random(seed + 1), 50_000),),
        )
        conn.execute(
            "create temporary table seed as select row_number() over (order by session_id) - 1 as t, * "
            "from marts.session_search where project_id = %(project)s",
            params,
        )
        conn.execute(
            "create temporary table seed_facts as select seed.t, f.* from seed "
            "join marts.fct_sessions f using (project_id, session_id)"
        )
        for table in ("seed", "seed_facts"):
            conn.execute(f"create index on {table} (t)")
            conn.execute(f"analyze {table}")
        conn.execute("analyze vocabulary")
        # Bulk loads go faster without the indexes: dropped here, made again afterwards.
        indexes = conn.execute(
            "select indexname, indexdef from pg_indexes where schemaname = 'marts' "
            "and tablename in ('session_search', 'fct_sessions')"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'drop index marts."{name}"')
        conn.execute(
            f"""
            insert into marts.session_search
                (project_id, session_id, agent_name, user_id, status, started_at, tags, document, identifiers,
                 watermark)
            select seed.project_id, c.session_id, c.agent_name, seed.user_id, seed.status, c.started_at, seed.tags,
                   seed.document || setweight(to_tsvector('english', c.order_number || ' ' || c.customer || ' '
                       || v1.w || ' ' || v2.w || ' ' || v3.w), 'C'),
                   seed.identifiers || ' ' || lower(c.order_number) || ' ' || lower(c.customer),
                   seed.watermark
            from generate_series(1, %(extra)s) as k
            cross join lateral (select {COPY_COLUMNS}) as c
            join vocabulary v1 on v1.i = 1 + (k * 31) %% 50000
            join vocabulary v2 on v2.i = 1 + (k * 17) %% 50000
            join vocabulary v3 on v3.i = 1 + (k * 7) %% 50000
            join seed on seed.t = k %% %(templates)s
        """,
            params,
        )
        columns = [
            r[0]
            for r in conn.execute(
                "select column_name from information_schema.columns where table_schema = 'marts' "
                "and table_name = 'fct_sessions' order by ordinal_position"
            ).fetchall()
        ]
        overrides = {
            "session_id": "c.session_id",
            "agent_name": "c.agent_name",
            "started_at": "c.started_at",
            "ended_at": "c.started_at + (f.ended_at - f.started_at)",
        }
        values = ", ".join(overrides.get(column, f"f.{column}") for column in columns)
        conn.execute(
            f"""
            insert into marts.fct_sessions ({", ".join(columns)})
            select {values}
            from generate_series(1, %(extra)s) as k
            cross join lateral (select {COPY_COLUMNS}) as c
            join seed_facts f on f.t = k %% %(templates)s
        """,
            params,
        )
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("vacuum analyze marts.session_search")
        conn.execute("vacuum analyze marts.fct_sessions")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def queries(database_url: str, project_id: uuid.UUID, repeat: int, seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed + 2)
    with psycopg.connect(database_url) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "select session_id from marts.session_search where project_id = %s order by random() limit %s",
                (project_id, repeat),
            ).fetchall()
        ]
        newest = conn.execute(
            "select max(started_at) from marts.session_search where project_id = %s", (project_id,)
        ).fetchone()[0]
    common = ["refund", "customer shipping", "billing invoice"]
    kinds: list[tuple[str, dict]] = []
    for i in range(repeat):
        tail = [word(r) for r in rng.sample(range(2000, VOCABULARY), 2)]
        mid = [word(r) for r in rng.sample(range(50, 500), 2)]
        number = rng.randrange(10**6)
        kinds += [
            ("rare phrase", {"q": f'"{tail[0]} {tail[1]}"'}),
            ("rare words", {"q": f"{tail[0]} {mid[0]}"}),
            ("two mid words", {"q": f"{mid[0]} {mid[1]}"}),
            ("identifier", {"q": f"ORD-{number:06d}"}),
            ("part of identifier", {"q": f"{number:06d}"[1:]}),
            ("common words", {"q": common[i % len(common)]}),
            (
                "common + filters",
                {
                    "q": common[i % len(common)],
                    "agent_name": AGENTS[i % len(AGENTS)],
                    "status": "success",
                    "since": newest.replace(day=1),
                },
            ),
            ("session id", {"q": str(ids[i % len(ids)])}),
            ("newest, no q", {}),
        ]
    return kinds


async def time_searches(
    database_url: str, project_id: uuid.UUID, cases: list[tuple[str, dict]], limit: int
) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for _, fields in cases[: len(cases) // 10 or 1]:  # warm the cache and the plans
            await search_store.search(conn, project_id, search_store.SearchFilter(limit=limit, **fields))
        for kind, fields in cases:
            started = time.perf_counter()
            await search_store.search(conn, project_id, search_store.SearchFilter(limit=limit, **fields))
            timings.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
    return timings


# --- for the scale benchmark (bench/scale.py): search whatever the marts hold ------------------


def sampled_queries(database_url: str, project_id: uuid.UUID, repeat: int, seed: int) -> list[tuple[str, dict]]:
    """Queries made of the project's own words (no bench vocabulary needed): from a sample of
    its indexed sessions, rare and common lexemes, adjacent words of a request as a phrase,
    identifiers with a digit (whole and a part), session ids; plus filters and no q."""
    rng = random.Random(seed)
    with psycopg.connect(database_url) as conn:
        sample = (
            conn.execute(
                "select session_id::text, agent_name, status, started_at, document::text, identifiers "
                "from marts.session_search tablesample system (1) where project_id = %s limit 400",
                (project_id,),
            ).fetchall()
            or conn.execute(
                "select session_id::text, agent_name, status, started_at, document::text, identifiers "
                "from marts.session_search where project_id = %s limit 400",
                (project_id,),
            ).fetchall()
        )
        requests = [
            r
            for (r,) in conn.execute(
                "select initial_request from marts.fct_session_details where project_id = %s "
                "and initial_request is not null limit 200",
                (project_id,),
            ).fetchall()
        ]
    if not sample:
        raise ValueError("no indexed sessions in this project: build the marts first")
    frequency: dict[str, int] = {}
    for *_, document, _ in sample:
        for lexeme in set(re.findall(r"'([a-z][a-z]{3,})'", document)):
            frequency[lexeme] = frequency.get(lexeme, 0) + 1
    ordered = sorted(frequency, key=lambda w: (-frequency[w], w))
    common = ordered[: max(3, len(ordered) // 50)]
    rare = [w for w in ordered if frequency[w] == 1] or ordered[-20:]
    identifiers = sorted(
        {
            token
            for *_, identifiers in sample
            for token in (identifiers or "").split()
            if any(c.isdigit() for c in token) and len(token) >= 6
        }
    )
    phrases = []
    for request in requests:
        words = re.findall(r"[A-Za-z]{4,}", request)
        if len(words) >= 2:
            i = rng.randrange(len(words) - 1)
            phrases.append(f'"{words[i]} {words[i + 1]}"')
    newest = max(row[3] for row in sample)
    kinds: list[tuple[str, dict]] = []
    for i in range(repeat):
        session_id, agent, status, *_ = sample[i % len(sample)]
        kinds += [
            ("rare word", {"q": rng.choice(rare)}),
            ("two words", {"q": f"{rng.choice(common)} {rng.choice(rare)}"}),
            ("common word", {"q": rng.choice(common)}),
            (
                "common + filters",
                {"q": rng.choice(common), "agent_name": agent, "status": status, "since": newest.replace(day=1)},
            ),
            ("session id", {"q": session_id}),
            ("newest, no q", {"agent_name": agent} if i % 2 else {}),
        ]
        if phrases:
            kinds.append(("phrase", {"q": rng.choice(phrases)}))
        if identifiers:
            token = rng.choice(identifiers)
            kinds += [("identifier", {"q": token}), ("part of identifier", {"q": token[1:-1]})]
    return kinds


def measure(
    database_url: str, project_id: uuid.UUID | None = None, repeat: int = 20, limit: int = 50, seed: int = 1
) -> dict:
    """Search latency on whatever the marts hold (what bench/scale.py calls after its build).

    Times ``ingest_api.store.search.search`` (what GET /v1/sessions?q= runs, in process, one
    connection) for queries made of the project's own words (``sampled_queries``), ``repeat`` of
    each kind, the first tenth again first to warm the cache. ``project_id``: by default the
    project with the most indexed sessions. Returns ``{"sessions": indexed sessions of the
    project, "all_sessions": of every project, "limit", "kinds": {kind: {"p50", "p95", "max",
    "n"}}, "all": {"p50", "p95", "max", "n"}}``, times in ms.
    """
    with psycopg.connect(database_url) as conn:
        if project_id is None:
            project_id = conn.execute(
                "select project_id from marts.session_search group by 1 order by count(*) desc limit 1"
            ).fetchone()[0]
        sessions = conn.execute(
            "select count(*) from marts.session_search where project_id = %s", (project_id,)
        ).fetchone()[0]
        all_sessions = conn.execute("select count(*) from marts.session_search").fetchone()[0]
    cases = sampled_queries(database_url, project_id, repeat, seed)
    timings = asyncio.run(time_searches(database_url, project_id, cases, limit))

    def figures(values: list[float]) -> dict:
        return {
            "p50": round(percentile(values, 50), 1),
            "p95": round(percentile(values, 95), 1),
            "max": round(max(values), 1),
            "n": len(values),
        }

    return {
        "sessions": sessions,
        "all_sessions": all_sessions,
        "limit": limit,
        "kinds": {kind: figures(values) for kind, values in timings.items()},
        "all": figures([t for values in timings.values() for t in values]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions to search (default 100,000)")
    parser.add_argument("--templates", type=int, default=1000, help="sessions ingested and indexed by dbt")
    parser.add_argument("--repeat", type=int, default=40, help="queries of each kind")
    parser.add_argument("--limit", type=int, default=50, help="page size")
    parser.add_argument("--database-url", help="an empty database to use (default: a throw-away PostgreSQL)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    cluster = None
    try:
        database_url = args.database_url
        if not database_url:
            cluster = LocalPostgres(Path(tempfile.mkdtemp(prefix="bagula-bench-search-")), free_port(), durable=False)
            database_url = cluster.ensure()
        db.upgrade(database_url)
        os.environ.setdefault("DBT_LOG_LEVEL", "warn")

        print(f"ingesting {args.templates:,} template sessions ...", flush=True)
        project_id = load(database_url, templates(args.templates, args.seed))
        started = time.perf_counter()
        assert transform(
            database_url, "--select", "+session_search +fct_sessions", "--exclude", "resource_type:test"
        ), "dbt failed"
        build_s = time.perf_counter() - started
        results = json.loads((target_dir() / "run_results.json").read_text())["results"]
        model_s = {r["unique_id"].rsplit(".", 1)[1]: r["execution_time"] for r in results}
        print(
            f"dbt build for {args.templates:,} sessions: {build_s:.1f} s wall (dbt's start-up included); "
            f"session_search itself {model_s['session_search']:.2f} s = "
            f"{model_s['session_search'] / args.templates * 1000:.2f} s per 1,000 sessions "
            f"(fct_sessions: {model_s['fct_sessions']:.2f} s)",
            flush=True,
        )

        print(f"growing the index to {args.sessions:,} sessions ...", flush=True)
        started = time.perf_counter()
        grow(database_url, project_id, args.sessions, args.templates, args.seed)
        with psycopg.connect(database_url) as conn:
            count, size = conn.execute(
                "select count(*), pg_size_pretty(pg_total_relation_size('marts.session_search')) "
                "from marts.session_search"
            ).fetchone()
        print(
            f"  {count:,} sessions indexed ({size} with indexes) in {time.perf_counter() - started:.0f} s", flush=True
        )

        cases = queries(database_url, project_id, args.repeat, args.seed)
        timings = asyncio.run(time_searches(database_url, project_id, cases, args.limit))
        everything = [t for values in timings.values() for t in values]
        print(f"\nsearch latency, {count:,} sessions, pages of {args.limit} (ms):")
        print(f"  {'query':<22} {'p50':>8} {'p95':>8} {'max':>8}")
        for kind, values in timings.items():
            print(f"  {kind:<22} {percentile(values, 50):8.1f} {percentile(values, 95):8.1f} {max(values):8.1f}")
        print(
            f"  {'all':<22} {percentile(everything, 50):8.1f} {percentile(everything, 95):8.1f} {max(everything):8.1f}"
        )

        # The scale benchmark's entry point on the same index: queries made of the data's own words.
        measured = measure(database_url, project_id, repeat=args.repeat, limit=args.limit, seed=args.seed)
        print(f"\nmeasure() (bench/scale.py's call), {measured['sessions']:,} sessions (ms):")
        for kind, figures in {**measured["kinds"], "all": measured["all"]}.items():
            print(f"  {kind:<22} {figures['p50']:8.1f} {figures['p95']:8.1f} {figures['max']:8.1f}")
    finally:
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
