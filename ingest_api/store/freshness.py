"""How fresh the marts are compared with ingest (for the metrics port's scrape)."""

from __future__ import annotations

import psycopg


def marts_lag_seconds(conn: psycopg.Connection) -> float:
    """Seconds since the oldest session the marts have not built yet was ingested; 0 when
    they hold everything ingested (sessions past the marts' watermark are the ones waiting)."""
    built = 0
    if conn.execute("select to_regclass('marts.fct_sessions') is not null").fetchone()[0]:
        built = conn.execute("select coalesce(max(watermark), 0) from marts.fct_sessions").fetchone()[0]
    waiting_since = conn.execute("select min(ingested_at) from agent_sessions where ingest_txid >= %s",
                                 (built,)).fetchone()[0]
    if waiting_since is None:
        return 0.0
    return conn.execute("select extract(epoch from now() - %s)::float8", (waiting_since,)).fetchone()[0]
