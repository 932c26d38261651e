"""Agent metrics, read from the dbt marts (never from the raw tables)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


# The window's LLM calls (by their session's start) per model: the whole hours from the hourly
# aggregate, only the window's first, partial hour from the calls themselves. A week is then
# ~170 aggregate rows per model instead of every call of the week (the same sums: the aggregate
# is built from the same calls, bucketed by the same start).
COST_BY_MODEL_SQL = """
    with bounds as (
        select now() - %(window)s as since,
               date_trunc('hour', now() - %(window)s)
               + case when date_trunc('hour', now() - %(window)s) = now() - %(window)s
                      then interval '0' else interval '1 hour' end as whole_hours_from
    ),
    parts as (
        select c.model, c.provider, count(*) as calls, coalesce(sum(c.cost_usd), 0) as cost
        from marts.fct_llm_calls c, bounds b
        where c.project_id = %(project)s and c.agent_name = %(agent)s
          and c.session_started_at >= b.since and c.session_started_at < b.whole_hours_from
        group by c.model, c.provider
        union all
        select h.model, h.provider, sum(h.llm_calls), sum(h.cost_usd)
        from marts.agg_agent_cost_hourly h, bounds b
        where h.project_id = %(project)s and h.agent_name = %(agent)s and h.hour >= b.whole_hours_from
        group by h.model, h.provider
    )
    select model, provider, sum(calls)::bigint, sum(cost)::double precision
    from parts
    group by model, provider
    order by 4 desc, model
"""


# The window's sessions, from the agent's index on fct_sessions alone (it includes these columns).
SESSION_FIGURES_SQL = """
    select count(*),
           avg(case when is_success then 1.0 else 0.0 end)::double precision,
           avg(total_cost_usd)::double precision,
           coalesce(sum(total_cost_usd), 0)::double precision,
           avg(duration_ms)::double precision,
           (percentile_cont(0.95) within group (order by duration_ms))::double precision,
           avg(user_satisfaction)::double precision,
           now() - %(window)s, now()
    from marts.fct_sessions
    where project_id = %(project)s and agent_name = %(agent)s
      and started_at >= now() - %(window)s
"""


class MartsMissing(Exception):
    """The marts have not been built yet (`bagula transform`)."""


async def agent_metrics(conn: psycopg.AsyncConnection, project_id: uuid.UUID, agent_name: str, window: str) -> dict:
    params = {"project": project_id, "agent": agent_name, "window": WINDOWS[window]}
    try:
        cur = await conn.execute(SESSION_FIGURES_SQL, params)
        sessions, success, avg_cost, total_cost, avg_latency, p95_latency, satisfaction, since, until = (
            await cur.fetchone()
        )
        cur = await conn.execute(COST_BY_MODEL_SQL, params)
        by_model = [
            {"model": model, "provider": provider, "llm_calls": calls, "cost_usd": cost}
            for model, provider, calls, cost in await cur.fetchall()
        ]
    except psycopg.errors.UndefinedTable:
        raise MartsMissing() from None
    return {
        "agent_name": agent_name,
        "window": window,
        "from_": since,
        "to": until,
        "total_sessions": sessions,
        "success_rate": success,
        "avg_cost_usd": avg_cost,
        "total_cost_usd": total_cost,
        "avg_latency_ms": avg_latency,
        "p95_latency_ms": p95_latency,
        "avg_satisfaction": satisfaction,
        "cost_by_model": by_model,
    }
