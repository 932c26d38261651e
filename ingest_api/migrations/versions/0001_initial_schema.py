"""Initial schema: tenants, API keys, raw session tables, detection tables.

Every raw row carries ``project_id`` and ``ingest_txid``, the id of the
transaction that wrote it. A reader that processes rows with
``previous_horizon <= ingest_txid < bagula_ingest_horizon()`` never skips a row
committed late: the horizon is the oldest transaction still running, so every
row below it is already committed (or rolled back) and visible.

The same schema serves plain PostgreSQL and TimescaleDB: unique keys on the
time-series tables include their time column, and exactly-once ingestion rests
on ``session_ledger``, an ordinary table keyed by (project, session id).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sys

from alembic import context, op
from sqlalchemy import text

from ingest_api.db import timescaledb_unusable

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

INGEST_COLUMNS = """
    ingest_txid bigint not null default (pg_current_xact_id()::text::bigint),
    ingested_at timestamptz not null default now()
"""

# (table, time column) pairs that become hypertables when TimescaleDB is there.
HYPERTABLES = [("agent_sessions", "start_time"), ("llm_calls", "start_time")]

SCHEMA = f"""
create table projects (
    project_id uuid primary key default gen_random_uuid(),
    name varchar(255) not null unique,
    created_at timestamptz not null default now()
);

create table api_keys (
    key_id uuid primary key default gen_random_uuid(),
    project_id uuid not null references projects (project_id),
    -- sha256 of the whole key; the key itself is never stored
    key_hash bytea not null unique,
    key_prefix varchar(16) not null,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);

create table session_ledger (
    project_id uuid not null,
    session_id uuid not null,
    {INGEST_COLUMNS},
    primary key (project_id, session_id)
);

create table agent_sessions (
    project_id uuid not null,
    session_id uuid not null,
    api_key_id uuid not null,
    agent_name varchar(255) not null,
    user_id varchar(255),
    parent_session_id uuid,
    start_time timestamptz not null,
    end_time timestamptz,
    initial_request text not null,
    final_outcome jsonb,
    status varchar(50) generated always as (final_outcome ->> 'status') stored,
    metadata jsonb,
    tags text[],
    -- fields of the wire format this version does not know, kept verbatim
    extra jsonb,
    created_at timestamptz not null default now(),
    {INGEST_COLUMNS},
    primary key (project_id, session_id, start_time)
);
create index agent_sessions_agent_time_idx
    on agent_sessions (project_id, agent_name, start_time desc, session_id desc);
create index agent_sessions_ingest_txid_idx on agent_sessions using brin (ingest_txid);

create table session_turns (
    project_id uuid not null,
    session_id uuid not null,
    turn_id varchar(255) not null,
    turn_number integer not null,
    "timestamp" timestamptz not null,
    trigger jsonb not null,
    -- the agent response without its tool calls (those live in tool_calls)
    agent_response jsonb,
    user_feedback jsonb,
    extra jsonb,
    {INGEST_COLUMNS},
    primary key (project_id, session_id, turn_id)
);
create index session_turns_ingest_txid_idx on session_turns using brin (ingest_txid);

create table llm_calls (
    project_id uuid not null,
    session_id uuid not null,
    turn_id varchar(255) not null,
    call_id varchar(255) not null,
    -- order of the call within its turn
    position integer not null,
    provider varchar(50) not null,
    model varchar(100) not null,
    start_time timestamptz not null,
    end_time timestamptz,
    tokens_input integer,
    tokens_output integer,
    tokens_total integer,
    cost_usd numeric(20, 10),
    latency_ms double precision,
    messages jsonb,
    response jsonb,
    extra jsonb,
    {INGEST_COLUMNS},
    primary key (project_id, session_id, call_id, start_time)
);
create index llm_calls_ingest_txid_idx on llm_calls using brin (ingest_txid);

create table tool_calls (
    project_id uuid not null,
    session_id uuid not null,
    turn_id varchar(255) not null,
    tool_id varchar(255) not null,
    -- order of the call within its turn's agent response
    position integer not null,
    tool_name varchar(255) not null,
    arguments jsonb,
    start_time timestamptz not null,
    end_time timestamptz,
    result jsonb,
    error text,
    latency_ms double precision,
    extra jsonb,
    {INGEST_COLUMNS},
    primary key (project_id, session_id, tool_id)
);
create index tool_calls_ingest_txid_idx on tool_calls using brin (ingest_txid);

create table baselines (
    baseline_id uuid primary key default gen_random_uuid(),
    project_id uuid not null references projects (project_id),
    agent_name varchar(255) not null,
    session_id uuid,
    created_at timestamptz not null default now(),
    metrics jsonb not null,
    tags text[]
);
create index baselines_agent_idx on baselines (project_id, agent_name, created_at desc);

create table regressions (
    regression_id uuid primary key default gen_random_uuid(),
    project_id uuid not null references projects (project_id),
    session_id uuid not null,
    agent_name varchar(255) not null,
    detected_at timestamptz not null default now(),
    differences jsonb not null,
    severity varchar(20) not null check (severity in ('minor', 'major', 'critical')),
    resolved boolean not null default false
);
create index regressions_agent_idx on regressions (project_id, agent_name, detected_at desc);

create table anomalies (
    anomaly_id uuid primary key default gen_random_uuid(),
    project_id uuid not null references projects (project_id),
    session_id uuid not null,
    agent_name varchar(255) not null,
    detected_at timestamptz not null default now(),
    anomaly_type varchar(50) not null,
    severity varchar(20) not null check (severity in ('minor', 'major', 'critical')),
    details jsonb not null,
    resolved boolean not null default false
);
create index anomalies_agent_idx on anomalies (project_id, agent_name, detected_at desc);

-- The ingestion watermark's upper bound: every row with a smaller ingest_txid
-- is committed (or gone), whatever commits later.
create function bagula_ingest_horizon() returns bigint
    language sql stable
    as $$ select pg_snapshot_xmin(pg_current_snapshot())::text::bigint $$;
"""


def _timescaledb_unusable() -> str | None:
    """Why plain tables (None: hypertables). auto uses them only when the library is preloaded."""
    if context.config.attributes.get("timescaledb", "auto") == "off":
        return "BAGULA_TIMESCALEDB=off"
    bind = op.get_bind()
    return timescaledb_unusable(lambda sql: bind.execute(text(sql)).scalar())


def upgrade() -> None:
    op.execute(SCHEMA)
    reason = _timescaledb_unusable()
    if reason is None:
        op.execute("create extension if not exists timescaledb")
        for table, column in HYPERTABLES:
            op.execute(
                f"select create_hypertable('{table}', '{column}', if_not_exists => true)"
            )
        print("timescaledb: hypertables created for "
              + ", ".join(t for t, _ in HYPERTABLES), file=sys.stderr)
    else:
        print(f"timescaledb: {reason}; skipped hypertables for "
              + ", ".join(t for t, _ in HYPERTABLES) + " (plain PostgreSQL tables)",
              file=sys.stderr)


def downgrade() -> None:
    op.execute("""
        drop function if exists bagula_ingest_horizon();
        drop table if exists anomalies, regressions, baselines, tool_calls, llm_calls,
            session_turns, agent_sessions, session_ledger, api_keys, projects;
    """)
