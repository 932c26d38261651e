"""Read paths that filtered what they walked, so that their cost grew with history.

* Sessions of one user (GET /v1/agents/{name}/sessions?userId=...). The list walked the agent's
  sessions newest first and filtered by user: a user with fewer sessions than a page made it
  read every session of the agent (181 ms p95 at a million sessions). The index holds each
  user's sessions in page order. Partial: sessions without a user are most of some agents'
  traffic and are never listed by user. With TimescaleDB, compressed chunks keep their own
  indexes; newly compressed ones get a bloom filter on user_id, as for every indexed column.
* Open verdicts of a severity (GET /v1/agents/{name}/anomalies?severity=critical&resolved=false,
  what on-call asks for) walked the agent's verdicts and filtered (81 ms p95 at a million
  sessions). Partial indexes on the open ones, by severity, in page order.

Creating them blocks writes to those tables while they are built (1.8 s for the user index on
the bench's million sessions with TimescaleDB, most of them in compressed chunks).

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
            where user_id is not null;
        create index anomalies_open_idx
            on anomalies (project_id, agent_name, severity, session_started_at desc, anomaly_id desc)
            where not resolved;
        create index regressions_open_idx
            on regressions (project_id, agent_name, severity, session_started_at desc, regression_id desc)
            where not resolved;
    """)


def downgrade() -> None:
    op.execute("""
        drop index if exists regressions_open_idx;
        drop index if exists anomalies_open_idx;
        drop index if exists agent_sessions_user_time_idx;
    """)

