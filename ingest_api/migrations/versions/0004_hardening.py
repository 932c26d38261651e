"""Hardening: exact costs, detection's own watermark, quarantined batches, alert delivery
that holds no lock while it talks to the webhook.

* ``llm_calls.cost_usd`` becomes unconstrained ``numeric``: a cost is stored exactly as sent
  (``numeric(20, 10)`` rounded anything below 1e-10 USD).
* ``pipeline_watermarks``: how far each consumer of the marts has got (``detection``: the marts
  watermark up to which sessions are judged), so a failed run is caught up by the next one.
* ``quarantined_batches``: ingest transactions whose rows made the marts' build fail. Their raw
  rows keep their data; their ``ingest_txid`` is negated, which takes them out of every
  incremental window (and full refreshes, which read ``ingest_txid >= 0``) until released.
* ``alerts``: ``claimed_until`` (a lease while one delivery pass sends it, instead of a row
  lock held across the network call), ``payload`` rendered at delivery; ``alert_delivery``
  records a pause after the webhook refused an alert for good.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        alter table llm_calls alter column cost_usd type numeric;

        create table pipeline_watermarks (
            name varchar(40) primary key,
            watermark bigint not null,
            updated_at timestamptz not null default now()
        );

        create table quarantined_batches (
            ingest_txid bigint primary key,
            project_ids uuid[] not null,
            sessions integer not null,
            reason text not null,
            quarantined_at timestamptz not null default now(),
            released_at timestamptz,
            released_txid bigint
        );
        comment on table quarantined_batches is
            'Ingest transactions whose rows failed the marts build; their raw rows carry -ingest_txid until released';

        alter table alerts
            add column claimed_until timestamptz,
            alter column payload drop not null;
        create index alerts_claimable_idx on alerts (created_at) where status = 'pending';
        drop index if exists alerts_pending_idx;

        create table alert_delivery (
            singleton boolean primary key default true check (singleton),
            paused_at timestamptz,
            reason text
        );
        insert into alert_delivery (singleton) values (true);
    """)


def downgrade() -> None:
    op.execute("""
        drop table if exists alert_delivery, quarantined_batches, pipeline_watermarks;
        drop index if exists alerts_claimable_idx;
        create index alerts_pending_idx on alerts (created_at) where status = 'pending';
        alter table alerts drop column claimed_until;
        alter table llm_calls alter column cost_usd type numeric(20, 10);
    """)
