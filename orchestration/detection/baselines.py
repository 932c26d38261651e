"""Agents' baselines as detection uses them: the active one per agent, and the automatic
one (the agent's first stable window), stored once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orchestration.detection.frames import utc


@dataclass(frozen=True)
class Baseline:
    baseline_id: uuid.UUID
    agent_name: str
    kind: str
    window_start: datetime
    window_end: datetime
    session_count: int
    metrics: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: tuple) -> "Baseline":
        baseline_id, agent, kind, start, end, count, metrics, created = row
        return cls(baseline_id, agent, kind, utc(start), utc(end), count, metrics, utc(created))


COLUMNS = "baseline_id, agent_name, kind, window_start, window_end, session_count, metrics, created_at"


def active(conn: psycopg.Connection, project_id: str) -> dict[str, Baseline]:
    """Each agent's active baseline (pinned, else automatic)."""
    rows = conn.execute(f"select {COLUMNS} from baselines where project_id = %s and active", (project_id,)).fetchall()
    return {row[1]: Baseline.from_row(row) for row in rows}


def save_automatic(conn: psycopg.Connection, project_id: str, agent_name: str, window_start: datetime,
                   window_end: datetime, session_count: int, metrics: dict[str, Any]) -> Baseline | None:
    """Store an agent's automatic baseline (its first stable window), once: None when one
    exists already. It becomes active only when nothing is pinned."""
    row = conn.execute(
        f"""
        insert into baselines (project_id, agent_name, kind, window_start, window_end, session_count, metrics, active)
        select %(project)s::uuid, %(agent)s::text, 'auto', %(start)s, %(end)s, %(count)s, %(metrics)s,
               not exists (select 1 from baselines where project_id = %(project)s::uuid
                           and agent_name = %(agent)s::text and active)
        on conflict do nothing
        returning {COLUMNS}
        """,
        {"project": project_id, "agent": agent_name, "start": window_start, "end": window_end,
         "count": session_count, "metrics": Jsonb(metrics)},
    ).fetchone()
    return Baseline.from_row(row) if row else None
