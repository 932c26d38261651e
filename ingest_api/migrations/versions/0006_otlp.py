"""OpenTelemetry traces and cost estimates.

* ``otlp_spans``: every span received on ``POST /v1/traces``, raw and exactly once (primary key
  project, trace id, span id: a resent export adds nothing), stamped ``ingest_txid`` like every
  raw row. Attributes, events, links and resource attributes are JSON as sent.
* ``otlp_traces``: one row per trace, the assembler's work queue: ``pending`` while it holds
  spans no session was made of yet, ``ready_at`` when its session may be complete (the quiet
  period after its last span), ``assembled_snapshot`` the snapshot its last assembly read, so
  that spans arriving later form the next session of its key and nothing is read twice.
* ``otlp_sessions``: every session the assembler made (or could not make), by session key
  (``conversation:<gen_ai.conversation.id or session.id>`` or ``trace:<trace id>``) and segment.
* ``llm_calls``: ``tokens_cache_read``/``tokens_cache_write`` (from the wire's
  ``metrics.tokensCacheRead``/``tokensCacheWrite``), and ``estimated_cost_usd`` with
  ``price_source`` (the price table's name and version) for calls sent without ``costUsd``.
* ``project_prices``: negotiated rates per project, provider and model (``bagula prices``),
  which the marts prefer to the price table.

docs/otlp.md describes the mapping, the session and turn rules and the cost rules.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = """
create table otlp_spans (
    project_id uuid not null,
    trace_id bytea not null,
    span_id bytea not null,
    parent_span_id bytea,
    api_key_id uuid not null,
    name text not null,
    -- SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    kind integer not null,
    start_unix_nano bigint not null,
    end_unix_nano bigint not null,
    start_time timestamptz generated always as (to_timestamp(start_unix_nano / 1e9)) stored,
    end_time timestamptz generated always as (to_timestamp(end_unix_nano / 1e9)) stored,
    -- W3C trace flags, and whether the parent is remote (bits 8 and 9)
    flags bigint not null,
    -- Status code: 0 unset, 1 ok, 2 error
    status_code integer not null,
    status_message text,
    -- gen_ai.conversation.id or session.id when the span carries one
    conversation_id text,
    attributes jsonb not null,
    events jsonb,
    links jsonb,
    resource jsonb,
    scope_name text,
    scope_version text,
    ingest_txid bigint not null default (pg_current_xact_id()::text::bigint),
    ingested_at timestamptz not null default now(),
    primary key (project_id, trace_id, span_id)
);
create index otlp_spans_ingest_txid_idx on otlp_spans using brin (ingest_txid);
comment on table otlp_spans is
    'Spans received on POST /v1/traces (OTLP), raw, once each; the assembler maps them to sessions (docs/otlp.md)';
comment on column otlp_spans.ingest_txid is
    'The transaction that wrote the row: its position against bagula_watermark()';

create table otlp_traces (
    project_id uuid not null,
    trace_id bytea not null,
    -- the key that sent its first span: the sessions made of it are stored under this key
    api_key_id uuid not null,
    conversation_id text,
    first_received_at timestamptz not null default now(),
    last_received_at timestamptz not null default now(),
    pending boolean not null default true,
    pending_since timestamptz not null default now(),
    ready_at timestamptz not null,
    assembled_snapshot pg_snapshot,
    assembled_at timestamptz,
    session_id uuid,
    primary key (project_id, trace_id)
);
create index otlp_traces_ready_idx on otlp_traces (ready_at) where pending;
create index otlp_traces_conversation_idx on otlp_traces (project_id, conversation_id) where pending;
comment on table otlp_traces is
    'The assembler''s work queue: traces with spans not yet in a session (pending), ready once quiet';

create table otlp_sessions (
    project_id uuid not null,
    session_key text not null,
    segment integer not null,
    session_id uuid not null,
    trace_ids bytea[] not null,
    spans integer not null,
    -- stored, duplicate (already stored: nothing written) or rejected (see problem)
    outcome varchar(20) not null check (outcome in ('stored', 'duplicate', 'rejected')),
    problem text,
    assembled_at timestamptz not null default now(),
    primary key (project_id, session_key, segment)
);
comment on table otlp_sessions is
    'Sessions assembled from spans: by session key (conversation:<id> or trace:<id>) and segment';

create table project_prices (
    project_id uuid not null references projects (project_id),
    -- '*' matches any provider
    provider varchar(50) not null,
    -- a model name, or a prefix ending in '*' (gpt-4o* matches gpt-4o-2024-08-06)
    model varchar(100) not null,
    -- the rate applies to calls that started at or after this time
    effective_from timestamptz not null,
    input_per_mtok numeric not null check (input_per_mtok >= 0),
    output_per_mtok numeric not null check (output_per_mtok >= 0),
    cache_read_per_mtok numeric check (cache_read_per_mtok >= 0),
    cache_write_per_mtok numeric check (cache_write_per_mtok >= 0),
    note text,
    created_at timestamptz not null default now(),
    primary key (project_id, provider, model, effective_from)
);
comment on table project_prices is
    'Negotiated rates (USD per million tokens) per project, provider and model: bagula prices set|show|unset';

alter table llm_calls
    add column tokens_cache_read integer,
    add column tokens_cache_write integer,
    add column estimated_cost_usd numeric,
    add column price_source varchar(60);
comment on column llm_calls.estimated_cost_usd is
    'For a call sent without costUsd: its cost from the price table named in price_source (null: model not in it)';
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("""
        alter table llm_calls drop column tokens_cache_read, drop column tokens_cache_write,
            drop column estimated_cost_usd, drop column price_source;
        drop table if exists project_prices, otlp_sessions, otlp_traces, otlp_spans;
    """)
