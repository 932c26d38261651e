{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['project_id', 'agent_name', 'tool_name', 'day'],
    indexes=[{'columns': ['watermark']}, {'columns': ['project_id', 'agent_name', 'day']}],
) }}

-- A new session re-opens its day even without tool calls: it changes session_share.
with touched as (
    {{ touched_buckets('day') }}
),

sessions as (
    {{ rows_in_buckets(ref('fct_sessions'), 'started_at') }}
),

tool_calls as (
    {{ rows_in_buckets(ref('fct_tool_calls'), 'session_started_at') }}
),

sessions_per_day as materialized (
    select project_id, agent_name, bucket_start, count(*) as agent_sessions
    from sessions
    group by project_id, agent_name, bucket_start
),

per_tool as materialized (
    select
        project_id,
        agent_name,
        tool_name,
        bucket_start,
        count(*) as calls,
        count(distinct session_id) as sessions_using,
        count(*) filter (where is_error) as error_count,
        {{ percentile(0.5, 'latency_ms') }} as latency_p50_ms,
        {{ percentile(0.95, 'latency_ms') }} as latency_p95_ms
    from tool_calls
    group by project_id, agent_name, tool_name, bucket_start
),

joined as (
    select
        per_tool.project_id,
        per_tool.agent_name,
        per_tool.tool_name,
        (per_tool.bucket_start at time zone 'utc')::date as day,
        per_tool.calls,
        per_tool.sessions_using,
        sessions_per_day.agent_sessions,
        per_tool.sessions_using::double precision / sessions_per_day.agent_sessions as session_share,
        per_tool.error_count,
        per_tool.error_count::double precision / per_tool.calls as error_rate,
        per_tool.latency_p50_ms,
        per_tool.latency_p95_ms,
        (select max(watermark) from {{ ref('fct_sessions') }}) as watermark
    from per_tool
    inner join sessions_per_day
        on sessions_per_day.project_id = per_tool.project_id
        and sessions_per_day.agent_name = per_tool.agent_name
        and sessions_per_day.bucket_start = per_tool.bucket_start
)

select * from joined
