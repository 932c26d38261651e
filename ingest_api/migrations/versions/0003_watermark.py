"""The ingest watermark gets its one name: ``bagula_watermark()``.

Every raw row carries ``ingest_txid``, the id of the transaction that wrote it. The
watermark is a transaction id below which every transaction has finished: the oldest
transaction still running (``pg_snapshot_xmin``). So a reader that takes the rows with
``previous watermark <= ingest_txid < bagula_watermark()`` never skips a row that
committed late (it was still running, so the watermark stayed below it) and never reads
a row twice (the next reader starts where this one stopped). Marts stamp the rows they
write with the watermark they read up to (column ``watermark``), the Dagster sensor
keeps it as its cursor, and docs/architecture.md explains the whole contract.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

WATERMARK = """
    create function bagula_watermark() returns bigint
        language sql stable
        as $$ select pg_snapshot_xmin(pg_current_snapshot())::text::bigint $$;
    comment on function bagula_watermark() is
        'The ingest watermark: every raw row with ingest_txid below it is committed (or rolled back); '
        'see docs/architecture.md';
"""


def upgrade() -> None:
    op.execute(WATERMARK + "drop function bagula_ingest_horizon();")
    for table in ("agent_sessions", "session_turns", "llm_calls", "tool_calls", "session_ledger"):
        op.execute(f"comment on column {table}.ingest_txid is "
                   "'The transaction that wrote the row: its position against bagula_watermark()'")


def downgrade() -> None:
    op.execute("""
        create function bagula_ingest_horizon() returns bigint
            language sql stable
            as $$ select pg_snapshot_xmin(pg_current_snapshot())::text::bigint $$;
        drop function bagula_watermark();
    """)
