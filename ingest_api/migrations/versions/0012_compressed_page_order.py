"""Compressed sessions in the session list's order (TimescaleDB only).

The session list pages by (start_time, session_id), newest first. agent_sessions' compressed
batches were ordered by start time and ingest transaction, so a page that reached a compressed
chunk decompressed every batch of the project in that chunk up to the cursor and sorted them:
17.7 ms in SQL for the bench's busiest agent half-way into a million sessions, 67-81 ms p95
through the API. Ordered by (start_time desc, session_id desc, ingest_txid), the batches are
read in page order and the scan stops once the page is full: 0.2 ms. ingest_txid stays in the
order, so every batch keeps its min/max, by which the marts' incremental reads skip batches.

Chunks compressed before keep their order until compressed again, so this migration
decompresses and compresses each of them (about 8 s per 200,000 sessions on the bench machine;
writes to that chunk wait meanwhile). Decompressing first also works on TimescaleDB versions
that refuse to change the settings of a table with compressed chunks. llm_calls keeps its order:
nothing pages through it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from alembic import op
from sqlalchemy import text

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

PAGE_ORDER = "start_time desc, session_id desc, ingest_txid"
INGEST_ORDER = "start_time desc, ingest_txid"


def _compress_in_order(order: str) -> None:
    bind = op.get_bind()
    compressed = bind.execute(text("""
        select format('%I.%I', chunk_schema, chunk_name) from timescaledb_information.chunks
        where hypertable_name = 'agent_sessions' and is_compressed
        order by range_start
    """)).scalars().all()
    for chunk in compressed:
        bind.execute(text("select decompress_chunk(cast(:chunk as regclass))"), {"chunk": chunk})
    op.execute(f"alter table agent_sessions set (timescaledb.compress_orderby = '{order}')")
    for chunk in compressed:
        bind.execute(text("select compress_chunk(cast(:chunk as regclass))"), {"chunk": chunk})


def _compressed_hypertable() -> bool:
    bind = op.get_bind()
    if not bind.execute(text("select count(*) from pg_extension where extname = 'timescaledb'")).scalar():
        return False
    return bool(bind.execute(text(
        "select count(*) from timescaledb_information.hypertables"
        " where hypertable_name = 'agent_sessions' and compression_enabled"
    )).scalar())


def upgrade() -> None:
    if _compressed_hypertable():
        _compress_in_order(PAGE_ORDER)


def downgrade() -> None:
    if _compressed_hypertable():
        _compress_in_order(INGEST_ORDER)
