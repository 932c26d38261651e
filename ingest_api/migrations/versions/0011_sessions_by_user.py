"""Sessions of one user: GET /v1/agents/{name}/sessions?userId=... without reading the agent's history.

The list walked the agent's sessions newest first and filtered by user: a user with fewer
sessions than a page made it read every session of the agent (181 ms p95 at a million
sessions, growing with history). This index holds the user's sessions in page order. Partial:
sessions without a user are most of some agents' traffic and are never listed by user.

Creating it blocks writes to agent_sessions while it is built (1.8 s here on the bench's
million sessions with TimescaleDB, whose compressed chunks keep their own indexes and are
filtered as before).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        create index agent_sessions_user_time_idx
            on agent_sessions (project_id, agent_name, user_id, start_time desc, session_id desc)
            where user_id is not null
    """)


def downgrade() -> None:
    op.execute("drop index if exists agent_sessions_user_time_idx")

