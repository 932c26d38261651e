"""Session search: the pg_trgm extension, where the database allows it.

Session search (``GET /v1/sessions?q=``, the Session explorer's Search filter) reads
``marts.session_search``, which dbt builds incrementally off the ingest path: a GIN index on
its tsvector for words and phrases, and, with pg_trgm, a trigram GIN index on its
identifier-like words for substring matches (part of an order number, an error code).

pg_trgm ships with PostgreSQL (contrib) and is a trusted extension (PostgreSQL 13+): a role
with CREATE on the database may create it. A managed database may still not offer it, or
the role may lack the right: then this migration says so and goes on; search works without
substring matches of identifiers (whole words and identifiers are still found), and the
index appears on the next build once an administrator runs ``create extension pg_trgm``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sys

from alembic import op
from sqlalchemy import text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# A failure inside the block (no such extension, no privilege) is caught there, in a
# subtransaction: the migration's own transaction goes on.
CREATE_TRGM = """
do $$
begin
    create extension if not exists pg_trgm;
exception when others then
    raise notice 'pg_trgm: %', sqlerrm;
end
$$
"""


def upgrade() -> None:
    bind = op.get_bind()
    available = bind.execute(text("select count(*) from pg_available_extensions where name = 'pg_trgm'")).scalar()
    if available:
        op.execute(CREATE_TRGM)
    installed = bind.execute(text("select count(*) from pg_extension where extname = 'pg_trgm'")).scalar()
    if installed:
        print("pg_trgm: installed; session search matches parts of identifiers", file=sys.stderr)
    else:
        reason = "not allowed to create it" if available else "not available on this server"
        print(f"pg_trgm: {reason}; session search finds whole words and identifiers only "
              "(`create extension pg_trgm` as an administrator adds substring matches on the next build)",
              file=sys.stderr)


def downgrade() -> None:
    # Other objects may use the extension by now; it stays (dropping it is an administrator's call).
    pass
