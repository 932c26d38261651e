"""Data lifecycle and privacy: scoped and expiring API keys, per-project retention and
redaction, erasure with an audit trail, and compression of old chunks on TimescaleDB.

* ``api_keys``: ``scopes`` (``ingest``, ``read``, ``admin``), ``expires_at`` and
  ``last_used_at`` (written at most once a minute per key and API process). Keys that exist
  when this migration runs keep every scope: they could do everything before, and a key that
  stops working after an upgrade is the worst surprise. New keys name their scopes.
* ``project_data_policies``: per project, how many days raw payloads, marts and verdicts are
  kept (null: the platform's default) and which ready redactors the API applies before storage.
* ``erasures``: the audit trail of erasures (who, which criteria, when, how many sessions and
  rows per table), never the erased content: a user id is recorded as its SHA-256.
* ``session_ledger.erased_at``: the tombstone of an erased session. Its ledger row (ids only)
  stays, so a client that sends the session again gets it counted as a duplicate: it is never
  stored again.
* ``retention_runs``: when retention last ran and what it deleted (rows per table), which
  also spaces the periodic runs.
* With TimescaleDB: the hypertables are compressed (segments by project, ordered by start
  time and ingest transaction, so that the marts' incremental reads skip compressed batches
  by their min/max) by a compression policy after ``COMPRESS_AFTER``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from alembic import op
from sqlalchemy import text

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COMPRESS_AFTER = "7 days"
HYPERTABLES = ("agent_sessions", "llm_calls")

SCHEMA = """
alter table api_keys
    add column scopes text[] not null default array['ingest', 'read', 'admin']
        check (cardinality(scopes) > 0 and scopes <@ array['ingest', 'read', 'admin']),
    add column expires_at timestamptz,
    add column last_used_at timestamptz;
comment on column api_keys.scopes is
    'ingest: send sessions and spans; read: every GET; admin: resolve, baselines, incidents, alert routes, '
    'erasure, retention, redaction. Keys older than migration 0008 keep all three.';
comment on column api_keys.last_used_at is
    'Last authenticated use, to within a minute (each API process writes it at most once a minute per key)';

create table project_data_policies (
    project_id uuid primary key references projects (project_id),
    -- days to keep; null: the platform default (BAGULA_RETENTION_*_DAYS)
    raw_days integer check (raw_days > 0),
    marts_days integer check (marts_days > 0),
    verdicts_days integer check (verdicts_days > 0),
    -- ready redactors the API applies to every session and span before storing them
    redactors text[] not null default '{}'
        check (redactors <@ array['emails', 'phone_numbers', 'card_numbers', 'api_keys']),
    updated_at timestamptz not null default now()
);
comment on table project_data_policies is
    'Per project: retention of raw payloads, marts and verdicts (days), and server-side redaction (docs/privacy.md)';

create table erasures (
    erasure_id uuid primary key default gen_random_uuid(),
    project_id uuid not null references projects (project_id),
    -- 'key:<api key id>' or 'cli:<operating-system user>'
    requested_by text not null,
    -- what was asked: sessionId, userIdSha256, or agentName with since/until; never content
    criteria jsonb not null,
    sessions integer not null,
    -- rows deleted per table
    rows_deleted jsonb not null,
    requested_at timestamptz not null default now(),
    completed_at timestamptz not null default now()
);
create index erasures_project_idx on erasures (project_id, requested_at desc);
comment on table erasures is 'Audit trail of erasures: who asked for what, when, and how many rows went (no content)';

alter table session_ledger add column erased_at timestamptz;
comment on column session_ledger.erased_at is
    'Set when the session was erased: the row (ids only) stays as a tombstone, so the session is never stored again';

-- Retention takes a project's oldest sessions first.
create index agent_sessions_project_time_idx on agent_sessions (project_id, start_time);

create table retention_runs (
    run_id bigint generated always as identity primary key,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    rows_deleted jsonb
);
"""


def _hypertables() -> list[str]:
    bind = op.get_bind()
    if not bind.execute(text("select count(*) from pg_extension where extname = 'timescaledb'")).scalar():
        return []
    rows = bind.execute(text("select hypertable_name from timescaledb_information.hypertables")).fetchall()
    return [r[0] for r in rows if r[0] in HYPERTABLES]


def upgrade() -> None:
    op.execute(SCHEMA)
    for table in _hypertables():
        op.execute(f"""
            alter table {table} set (
                timescaledb.compress,
                timescaledb.compress_segmentby = 'project_id',
                timescaledb.compress_orderby = 'start_time desc, ingest_txid'
            )
        """)
        op.execute(f"select add_compression_policy('{table}', interval '{COMPRESS_AFTER}', if_not_exists => true)")


def downgrade() -> None:
    for table in _hypertables():
        op.execute(f"select remove_retention_policy('{table}', if_exists => true)")
        op.execute(f"select remove_compression_policy('{table}', if_exists => true)")
        op.execute(f"select decompress_chunk(c, true) from show_chunks('{table}') c")
        op.execute(f"alter table {table} set (timescaledb.compress = false)")
    op.execute("""
        drop table if exists retention_runs, erasures, project_data_policies;
        drop index if exists agent_sessions_project_time_idx;
        alter table session_ledger drop column erased_at;
        alter table api_keys drop column scopes, drop column expires_at, drop column last_used_at;
    """)
