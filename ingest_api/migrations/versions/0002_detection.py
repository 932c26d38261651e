"""Detection: verdict columns, versioned models, baselines by window, alert outbox.

Verdicts are keyed so that re-running detection for a day adds nothing:
one anomaly per (session, type), one regression per (session, baseline).
``session_started_at`` is the time a verdict is about (the API's time filter);
``detected_at`` is when it was written.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        -- Dagster's run and event storage (the platform's instance keeps it here).
        create schema if not exists dagster;

        alter table baselines
            add column kind varchar(10) not null default 'auto' check (kind in ('auto', 'pinned')),
            add column window_start timestamptz,
            add column window_end timestamptz,
            add column session_count integer,
            add column active boolean not null default true;
        -- One active baseline per agent; at most one automatic one ever (the first stable window).
        create unique index baselines_active_idx on baselines (project_id, agent_name) where active;
        create unique index baselines_auto_idx on baselines (project_id, agent_name) where kind = 'auto';

        alter table regressions
            add column baseline_id uuid references baselines (baseline_id),
            add column session_started_at timestamptz,
            add column score double precision,
            add column explanation text,
            add column resolved_at timestamptz;
        create unique index regressions_verdict_idx on regressions (project_id, session_id, baseline_id);
        create index regressions_session_time_idx on regressions (project_id, agent_name, session_started_at desc);

        alter table anomalies
            add column session_started_at timestamptz,
            add column score double precision,
            add column explanation text,
            add column model_version text,
            add column resolved_at timestamptz;
        create unique index anomalies_verdict_idx on anomalies (project_id, session_id, anomaly_type);
        create index anomalies_session_time_idx on anomalies (project_id, agent_name, session_started_at desc);

        -- Trained detectors, so that every verdict can be traced to (and reproduced with) its model.
        create table detection_models (
            model_id uuid primary key default gen_random_uuid(),
            -- Derived from the training data and parameters: the same data gives the same version.
            model_version text not null,
            project_id uuid not null references projects (project_id),
            agent_name varchar(255) not null,
            kind varchar(40) not null,
            trained_for_day date not null,
            trained_from timestamptz not null,
            trained_until timestamptz not null,
            training_sessions integer not null,
            features text[] not null,
            params jsonb not null,
            model bytea not null,
            created_at timestamptz not null default now(),
            unique (project_id, agent_name, kind, trained_for_day)
        );
        create index detection_models_version_idx on detection_models (model_version);

        -- Outbox: a critical verdict and its alert are written in one transaction;
        -- delivery marks the row, so a restart neither loses nor repeats an alert.
        create table alerts (
            alert_id uuid primary key default gen_random_uuid(),
            project_id uuid not null references projects (project_id),
            source varchar(20) not null check (source in ('anomaly', 'regression')),
            source_id uuid not null,
            agent_name varchar(255) not null,
            session_id uuid not null,
            severity varchar(20) not null,
            payload jsonb not null,
            status varchar(20) not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
            attempts integer not null default 0,
            last_error text,
            created_at timestamptz not null default now(),
            last_attempt_at timestamptz,
            delivered_at timestamptz,
            unique (source, source_id)
        );
        create index alerts_pending_idx on alerts (created_at) where status = 'pending';
    """)


def downgrade() -> None:
    op.execute("""
        drop table if exists alerts, detection_models;
        drop schema if exists dagster cascade;
        drop index if exists anomalies_verdict_idx, anomalies_session_time_idx,
            regressions_verdict_idx, regressions_session_time_idx, baselines_active_idx, baselines_auto_idx;
        alter table anomalies drop column session_started_at, drop column score, drop column explanation,
            drop column model_version, drop column resolved_at;
        alter table regressions drop column baseline_id, drop column session_started_at, drop column score,
            drop column explanation, drop column resolved_at;
        alter table baselines drop column kind, drop column window_start, drop column window_end,
            drop column session_count, drop column active;
    """)
