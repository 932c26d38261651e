"""Verdicts written exactly once: COPY into a temporary table, then ``INSERT ... ON CONFLICT
DO NOTHING`` on their natural keys, so re-running a day adds nothing. New verdicts wait for
grouping into incidents (``grouped_at`` null); alerts are per incident event (incidents.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import psycopg


def _copy_rows(conn: psycopg.Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
    with conn.cursor().copy(f"copy {table} ({', '.join(columns)}) from stdin") as copy:
        for row in rows:
            copy.write_row(row)


@dataclass(frozen=True)
class VerdictTable:
    table: str
    columns: dict[str, str]  # column -> type in the staging table
    key: str  # the natural key new verdicts are told apart by
    count_by: str  # what the returned counts are keyed by


ANOMALIES = VerdictTable(
    "anomalies",
    {"session_id": "uuid", "agent_name": "text", "session_started_at": "timestamptz", "anomaly_type": "text",
     "severity": "text", "score": "double precision", "explanation": "text", "details": "jsonb",
     "model_version": "text"},
    "project_id, session_id, anomaly_type", "anomaly_type")
REGRESSIONS = VerdictTable(
    "regressions",
    {"session_id": "uuid", "agent_name": "text", "session_started_at": "timestamptz", "baseline_id": "uuid",
     "severity": "text", "score": "double precision", "explanation": "text", "differences": "jsonb"},
    "project_id, session_id, baseline_id", "severity")


def write(conn: psycopg.Connection, kind: VerdictTable, project_id: str, verdicts: pl.DataFrame) -> dict:
    """Insert the verdicts that are new; returns {kind.count_by value: new verdicts}."""
    if verdicts.is_empty():
        return {}
    columns = list(kind.columns)
    staging = f"{kind.table}_batch"
    with conn.transaction():
        conn.execute(f"create temporary table {staging} ("
                     + ", ".join(f"{name} {type_}" for name, type_ in kind.columns.items()) + ") on commit drop")
        _copy_rows(conn, staging, columns, verdicts.select(columns).rows())
        [new] = conn.execute(
            f"""
            with ins as (
                insert into {kind.table} (project_id, {', '.join(columns)})
                select %(project)s, {', '.join(columns)} from {staging}
                on conflict ({kind.key}) do nothing
                returning *
            )
            select coalesce(jsonb_object_agg({kind.count_by}, n), '{{}}')
            from (select {kind.count_by}, count(*) as n from ins group by {kind.count_by}) as counts
            """,
            {"project": project_id},
        ).fetchone()
    return new

