"""What detection reads and writes: session frames from the marts, baselines,
trained models, verdicts and their alerts. Connections are in autocommit mode;
every write that must be atomic opens its own transaction.

Verdicts are written with COPY into a temporary table, then ``INSERT ... ON
CONFLICT DO NOTHING`` on their natural keys, so re-running a day adds nothing;
a critical verdict's alert is created by the same statement, only for verdicts
that are new, which is what makes each alert exist exactly once.
"""

from __future__ import annotations

import pickle
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import polars as pl
import psycopg
from psycopg.types.json import Jsonb

from ml.schema import SESSION_SCHEMA, conform

# One row per session in the contract of ml.schema, computed from the marts.
# Tool order within a session: start time, then position in the agent's response
# (parallel calls start together).
SESSION_FRAME_SQL = """
with sessions as (
    select * from marts.fct_sessions
    where project_id = %(project)s and started_at >= %(start)s and started_at < %(end)s
      and (%(agent)s::text is null or agent_name = %(agent)s)
),
llm as (
    select session_id, max(tokens_input) as peak_tokens_input
    from marts.fct_llm_calls
    where project_id = %(project)s and session_started_at >= %(start)s and session_started_at < %(end)s
      and (%(agent)s::text is null or agent_name = %(agent)s)
    group by session_id
),
tools as (
    select * from marts.fct_tool_calls
    where project_id = %(project)s and session_started_at >= %(start)s and session_started_at < %(end)s
      and (%(agent)s::text is null or agent_name = %(agent)s)
),
tool_turns as (
    select session_id,
           coalesce(extract(epoch from max(ended_at) - min(started_at)) * 1000, 0) as wall_ms
    from tools
    group by session_id, turn_id
),
tool_walls as (
    select session_id, sum(wall_ms)::double precision as tool_wall_ms from tool_turns group by session_id
),
tool_sequences as (
    select session_id, string_agg(tool_name, ',' order by started_at, call_position, tool_id) as tool_sequence
    from tools
    group by session_id
)
select
    sessions.project_id::text,
    sessions.session_id::text,
    sessions.parent_session_id::text,
    sessions.agent_name,
    sessions.started_at,
    sessions.duration_ms,
    sessions.turn_count::bigint,
    sessions.llm_call_count::bigint,
    sessions.tool_call_count::bigint,
    sessions.tool_error_count::bigint,
    sessions.tokens_input::bigint,
    sessions.tokens_output::bigint,
    sessions.tokens_total::bigint,
    coalesce(llm.peak_tokens_input, 0)::bigint,
    sessions.total_cost_usd::double precision,
    sessions.llm_latency_ms::double precision,
    sessions.tool_latency_ms::double precision,
    coalesce(tool_walls.tool_wall_ms, 0),
    coalesce(sessions.models, ''),
    coalesce(sessions.providers, ''),
    coalesce(tool_sequences.tool_sequence, ''),
    sessions.status,
    sessions.user_satisfaction::double precision,
    sessions.confidence::double precision,
    sessions.ingest_batch
from sessions
left join llm on llm.session_id = sessions.session_id
left join tool_walls on tool_walls.session_id = sessions.session_id
left join tool_sequences on tool_sequences.session_id = sessions.session_id
order by sessions.started_at, sessions.session_id
"""

FRAME_COLUMNS = [*SESSION_SCHEMA, "ingest_batch"]


def frame_from_rows(rows: list[tuple]) -> pl.DataFrame:
    """Rows of SESSION_FRAME_SQL -> the ml.schema frame, plus ``ingest_batch``."""
    schema = {**SESSION_SCHEMA, "ingest_batch": pl.Int64}
    frame = pl.DataFrame(rows, schema=list(schema), orient="row", infer_schema_length=None)
    batches = frame.get_column("ingest_batch").cast(pl.Int64)
    return conform(frame.drop("ingest_batch")).with_columns(batches.alias("ingest_batch"))


def session_frame(conn: psycopg.Connection, project_id: uuid.UUID | str, start: datetime, end: datetime,
                  agent_name: str | None = None) -> pl.DataFrame:
    rows = conn.execute(SESSION_FRAME_SQL, {"project": project_id, "start": start, "end": end,
                                            "agent": agent_name}).fetchall()
    return frame_from_rows(rows)


def marts_ready(conn: psycopg.Connection) -> bool:
    return conn.execute(
        "select to_regclass('marts.fct_sessions') is not null and to_regclass('marts.fct_tool_calls') is not null"
    ).fetchone()[0]


def projects_with_sessions(conn: psycopg.Connection, start: datetime, end: datetime,
                           only_batch: int | None = None) -> list[str]:
    """Projects with sessions started in [start, end) (only those the build ``only_batch`` added)."""
    rows = conn.execute(
        "select distinct project_id::text from marts.fct_sessions where started_at >= %s and started_at < %s"
        " and (%s::bigint is null or ingest_batch = %s::bigint)",
        (start, end, only_batch, only_batch),
    ).fetchall()
    return sorted(r[0] for r in rows)


def utc(moment: datetime) -> datetime:
    """psycopg gives the session's zone (e.g. Etc/UTC); polars compares zones strictly."""
    return moment.astimezone(timezone.utc)


def first_sessions_without_baseline(conn: psycopg.Connection, project_id: str,
                                    agents: list[str]) -> dict[str, datetime]:
    """When each of ``agents`` that has no automatic baseline yet started its first session."""
    rows = conn.execute(
        """
        select agent_name,
               (select min(started_at) from marts.fct_sessions s
                where s.project_id = %(project)s and s.agent_name = agents.agent_name)
        from unnest(%(agents)s::text[]) as agents (agent_name)
        where not exists (select 1 from baselines b where b.project_id = %(project)s
                          and b.agent_name = agents.agent_name and b.kind = 'auto')
        """,
        {"project": project_id, "agents": agents},
    ).fetchall()
    return {agent: utc(first) for agent, first in rows if first is not None}


# ------------------------------------------------------------------ baselines


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


BASELINE_COLUMNS = "baseline_id, agent_name, kind, window_start, window_end, session_count, metrics, created_at"


def active_baselines(conn: psycopg.Connection, project_id: str) -> dict[str, Baseline]:
    rows = conn.execute(
        f"select {BASELINE_COLUMNS} from baselines where project_id = %s and active", (project_id,)
    ).fetchall()
    return {row[1]: Baseline.from_row(row) for row in rows}


def save_auto_baseline(conn: psycopg.Connection, project_id: str, agent_name: str, window_start: datetime,
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
        returning {BASELINE_COLUMNS}
        """,
        {"project": project_id, "agent": agent_name, "start": window_start, "end": window_end,
         "count": session_count, "metrics": Jsonb(metrics)},
    ).fetchone()
    return Baseline.from_row(row) if row else None


# ------------------------------------------------------------------ trained models


def load_model(conn: psycopg.Connection, project_id: str, agent_name: str, kind: str, day: Any) -> Any | None:
    row = conn.execute(
        "select model from detection_models where project_id = %s and agent_name = %s and kind = %s"
        " and trained_for_day = %s",
        (project_id, agent_name, kind, day),
    ).fetchone()
    # Only our own pickles, written below by this same code, are ever loaded.
    return pickle.loads(zlib.decompress(row[0])) if row else None


def save_model(conn: psycopg.Connection, project_id: str, agent_name: str, kind: str, day: Any, model: Any) -> Any:
    """Store a trained model once per (agent, kind, day); returns the stored one (the
    first writer's, if two runs trained the same day at once)."""
    inserted = conn.execute(
        """
        insert into detection_models (model_version, project_id, agent_name, kind, trained_for_day, trained_from,
                                      trained_until, training_sessions, features, params, model)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        on conflict do nothing
        returning model_id
        """,
        (model.version, project_id, agent_name, kind, day, model.trained_from, model.trained_until,
         model.trained_rows, list(model.features), Jsonb(model.params), zlib.compress(pickle.dumps(model), 1)),
    ).fetchone()
    return model if inserted else load_model(conn, project_id, agent_name, kind, day)


# ------------------------------------------------------------------ verdicts and alerts


def _alert_payload_sql(kind: str) -> str:
    """A Slack-compatible message for a new critical verdict (built in SQL so that the
    verdict and its alert are one statement); ``kind`` is the SQL naming its type."""
    return f"""
        jsonb_build_object(
            'text', format(':rotating_light: [%%s] %%s on %%s: %%s (session %%s)',
                           upper(ins.severity), {kind}, ins.agent_name, ins.explanation, ins.session_id),
            'blocks', jsonb_build_array(
                jsonb_build_object('type', 'section', 'text', jsonb_build_object(
                    'type', 'mrkdwn',
                    'text', format('*[%%s] %%s* on `%%s`%%s%%s',
                                   upper(ins.severity), {kind}, ins.agent_name, chr(10), ins.explanation))),
                jsonb_build_object('type', 'context', 'elements', jsonb_build_array(
                    jsonb_build_object('type', 'mrkdwn', 'text', format(
                        'session `%%s` started %%s · project %%s · score %%s',
                        ins.session_id, ins.session_started_at, projects.name, round(ins.score::numeric, 3))))))
        )
    """


def _copy_rows(conn: psycopg.Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
    with conn.cursor().copy(f"copy {table} ({', '.join(columns)}) from stdin") as copy:
        for row in rows:
            copy.write_row(row)


@dataclass(frozen=True)
class VerdictTable:
    table: str
    source: str  # alerts.source
    id_column: str
    columns: dict[str, str]  # column -> type in the staging table
    key: str  # the natural key new verdicts are told apart by
    count_by: str  # what the returned counts are keyed by
    type_sql: str  # the verdict's type in the alert's text


ANOMALIES = VerdictTable(
    "anomalies", "anomaly", "anomaly_id",
    {"session_id": "uuid", "agent_name": "text", "session_started_at": "timestamptz", "anomaly_type": "text",
     "severity": "text", "score": "double precision", "explanation": "text", "details": "jsonb",
     "model_version": "text"},
    "project_id, session_id, anomaly_type", "anomaly_type", "ins.anomaly_type")
REGRESSIONS = VerdictTable(
    "regressions", "regression", "regression_id",
    {"session_id": "uuid", "agent_name": "text", "session_started_at": "timestamptz", "baseline_id": "uuid",
     "severity": "text", "score": "double precision", "explanation": "text", "differences": "jsonb"},
    "project_id, session_id, baseline_id", "severity", "'regression'")


def write_verdicts(conn: psycopg.Connection, kind: VerdictTable, project_id: str,
                   verdicts: pl.DataFrame) -> tuple[dict, int]:
    """Insert the verdicts that are new, and an alert for each new critical one;
    returns ({kind.count_by value: new verdicts}, new alerts)."""
    if verdicts.is_empty():
        return {}, 0
    columns = list(kind.columns)
    staging = f"{kind.table}_batch"
    with conn.transaction():
        conn.execute(f"create temporary table {staging} ("
                     + ", ".join(f"{name} {type_}" for name, type_ in kind.columns.items()) + ") on commit drop")
        _copy_rows(conn, staging, columns, verdicts.select(columns).rows())
        new, alerts = conn.execute(
            f"""
            with ins as (
                insert into {kind.table} (project_id, {', '.join(columns)})
                select %(project)s, {', '.join(columns)} from {staging}
                on conflict ({kind.key}) do nothing
                returning *
            ),
            alerted as (
                insert into alerts (project_id, source, source_id, agent_name, session_id, severity, payload)
                select ins.project_id, '{kind.source}', ins.{kind.id_column}, ins.agent_name, ins.session_id,
                       ins.severity, {_alert_payload_sql(kind.type_sql)}
                from ins join projects using (project_id)
                where ins.severity = 'critical'
                returning 1
            )
            select (select coalesce(jsonb_object_agg({kind.count_by}, n), '{{}}')
                    from (select {kind.count_by}, count(*) as n from ins group by {kind.count_by}) as counts),
                   (select count(*) from alerted)
            """,
            {"project": project_id},
        ).fetchone()
    return new, alerts


@dataclass(frozen=True)
class PendingAlert:
    alert_id: uuid.UUID
    payload: dict[str, Any]
    attempts: int


def deliver_pending_alerts(conn: psycopg.Connection, send: Any, limit: int = 10_000) -> tuple[int, int]:
    """Send pending alerts one at a time with ``send(alert) -> None`` (raises on failure).

    Each alert is locked (SKIP LOCKED: concurrent runs never send the same one),
    sent, and marked in its own transaction, so a crash repeats at most the one
    alert in flight and loses none. Returns (delivered, failed)."""
    delivered = failed = 0
    for _ in range(limit):
        with conn.transaction():
            row = conn.execute(
                """
                select alert_id, payload, attempts from alerts
                where status = 'pending'
                order by created_at, alert_id
                limit 1
                for update skip locked
                """
            ).fetchone()
            if row is None:
                break
            alert = PendingAlert(*row)
            try:
                send(alert)
            except Exception as exc:  # noqa: BLE001 - a failure leaves the alert pending for the next pass
                failed += 1
                status = "failed" if getattr(exc, "permanent", False) else "pending"
                conn.execute(
                    "update alerts set attempts = attempts + 1, last_error = %s, last_attempt_at = now(),"
                    " status = %s where alert_id = %s",
                    (str(exc)[:500] or type(exc).__name__, status, alert.alert_id),
                )
                # Later alerts would most likely fail the same way: stop until the next pass.
                break
            delivered += 1
            conn.execute(
                "update alerts set status = 'delivered', attempts = attempts + 1, delivered_at = now(),"
                " last_attempt_at = now(), last_error = null where alert_id = %s",
                (alert.alert_id,),
            )
    return delivered, failed


def pending_alert_count(conn: psycopg.Connection) -> int:
    return conn.execute("select count(*) from alerts where status = 'pending'").fetchone()[0]


# ------------------------------------------------------------------ the ingestion watermark


def ingest_horizon(conn: psycopg.Connection) -> int:
    """Every raw row with a smaller ingest_txid is committed (see migration 0001)."""
    return conn.execute("select bagula_ingest_horizon()").fetchone()[0]


def touched_days(conn: psycopg.Connection, from_txid: int, to_txid: int) -> list:
    """UTC days on which the sessions ingested in [from_txid, to_txid) started."""
    rows = conn.execute(
        """
        select distinct (start_time at time zone 'UTC')::date from agent_sessions
        where ingest_txid >= %s and ingest_txid < %s
        order by 1
        """,
        (from_txid, to_txid),
    ).fetchall()
    return [r[0] for r in rows]


def session_days(conn: psycopg.Connection) -> list:
    """Every UTC day with at least one session."""
    rows = conn.execute(
        "select distinct (start_time at time zone 'UTC')::date from agent_sessions order by 1"
    ).fetchall()
    return [r[0] for r in rows]
