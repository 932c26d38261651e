"""Scale: what the hot read paths need so that none of them grows with the project's history.

* ``agent_session_counts``: per project and agent, the sessions stored, the first and the last
  start time, kept by the ingest transaction that stores them (so it is exact: a duplicate never
  reaches it, a rolled-back batch takes its counts with it). GET /v1/agents sums a handful of
  rows per agent instead of grouping every session of the project. Each agent has up to
  ``SHARDS`` rows (the shard is the writing backend's pid modulo ``SHARDS``): concurrent batches
  for the same agent then rarely wait for each other's commit on one counter row.
* ``agent_sessions`` summary columns, written with the session by the ingest store: its turn,
  LLM call, tool call and tool error counts, tokens and client-reported cost (what the session
  list shows: it read them by counting the session's rows in three tables, three lookups per
  listed session, one per time chunk in ``llm_calls``), and the span of its LLM calls' start
  times (the bound that lets GET /v1/sessions/{id} read only the ``llm_calls`` chunks and
  compressed batches holding them). Sessions stored before this migration have nulls and are
  counted as before; nothing is rewritten.
* ``session_ledger.start_time``, written by the claim: GET /v1/sessions/{id} finds the
  session's chunk of ``agent_sessions`` from it instead of looking in every chunk (null for
  sessions claimed before this migration: they are looked up as before).
* ``bagula_recount_agents(project)``: recomputes a project's counts from ``agent_sessions``
  exactly, for whatever deletes sessions (erasure, retention); it locks out the counter's
  writers while it runs, so no batch is counted twice or missed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SHARDS = 16


def upgrade() -> None:
    op.execute("""
        alter table agent_sessions
            add column turn_count integer,
            add column llm_call_count integer,
            add column tool_call_count integer,
            add column tool_error_count integer,
            add column tokens_total bigint,
            add column llm_cost_usd numeric,
            add column llm_calls_from timestamptz,
            add column llm_calls_until timestamptz;
        comment on column agent_sessions.turn_count is
            'Summary written with the session (null before migration 0009): turns, LLM calls, tool calls, '
            'tool errors, tokens_total and cost_usd summed over its LLM calls, their first and last start';

        alter table session_ledger add column start_time timestamptz;
        comment on column session_ledger.start_time is
            'The session''s start (null: claimed before migration 0009): its key in the time-partitioned tables';

        create table agent_session_counts (
            project_id uuid not null,
            agent_name varchar(255) not null,
            shard smallint not null,
            sessions bigint not null,
            first_seen timestamptz not null,
            last_seen timestamptz not null,
            primary key (project_id, agent_name, shard)
        );
        comment on table agent_session_counts is
            'Sessions stored per project and agent (summed over shards), kept by the ingest transaction';

        create function bagula_recount_agents(project uuid) returns void
            language plpgsql as $$
        begin
            -- Waits for the batches that counted already, holds off new ones until commit.
            lock table agent_session_counts in share row exclusive mode;
            delete from agent_session_counts where project_id = project;
            insert into agent_session_counts (project_id, agent_name, shard, sessions, first_seen, last_seen)
            select project_id, agent_name, 0, count(*), min(start_time), max(start_time)
            from agent_sessions where project_id = project
            group by project_id, agent_name;
        end $$;
        comment on function bagula_recount_agents(uuid) is
            'Recount a project''s agent_session_counts from agent_sessions (after deleting sessions)';

        insert into agent_session_counts (project_id, agent_name, shard, sessions, first_seen, last_seen)
        select project_id, agent_name, 0, count(*), min(start_time), max(start_time)
        from agent_sessions group by project_id, agent_name;
    """)


def downgrade() -> None:
    op.execute("""
        drop function if exists bagula_recount_agents(uuid);
        drop table if exists agent_session_counts;
        alter table session_ledger drop column start_time;
        alter table agent_sessions
            drop column turn_count, drop column llm_call_count, drop column tool_call_count,
            drop column tool_error_count, drop column tokens_total, drop column llm_cost_usd,
            drop column llm_calls_from, drop column llm_calls_until;
    """)
