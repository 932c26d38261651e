{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['project_id', 'agent_name', 'hour'],
    indexes=[{'columns': ['watermark']}, {'columns': ['project_id', 'agent_name', 'hour']}],
) }}

-- The stats are joined after aggregating; materialized, each is computed once
-- even when the planner misjudges their size and picks a nested loop.
with touched as (
    {{ touched_buckets('hour') }}
),

sessions as (
    {{ rows_in_buckets(ref('fct_sessions'), 'started_at') }}
),

llm_calls as (
    {{ rows_in_buckets(ref('fct_llm_calls'), 'session_started_at') }}
),

tool_calls as (
    {{ rows_in_buckets(ref('fct_tool_calls'), 'session_started_at') }}
),

session_stats as materialized (
    select
        project_id,
        agent_name,
        bucket_start,
        count(*) as sessions,
        {{ percentile(0.5, 'duration_ms') }} as duration_p50_ms,
        {{ percentile(0.95, 'duration_ms') }} as duration_p95_ms,
        {{ percentile(0.99, 'duration_ms') }} as duration_p99_ms
    from sessions
    group by project_id, agent_name, bucket_start
),

llm_stats as materialized (
    select
        project_id,
        agent_name,
        bucket_start,
        count(*) as llm_calls,
        {{ percentile(0.5, 'latency_ms') }} as llm_latency_p50_ms,
        {{ percentile(0.95, 'latency_ms') }} as llm_latency_p95_ms,
        {{ percentile(0.99, 'latency_ms') }} as llm_latency_p99_ms
    from llm_calls
    group by project_id, agent_name, bucket_start
),

tool_stats as materialized (
    select
        project_id,
        agent_name,
        bucket_start,
        count(*) as tool_calls,
        {{ percentile(0.5, 'latency_ms') }} as tool_latency_p50_ms,
        {{ percentile(0.95, 'latency_ms') }} as tool_latency_p95_ms,
        {{ percentile(0.99, 'latency_ms') }} as tool_latency_p99_ms
    from tool_calls
    group by project_id, agent_name, bucket_start
),

joined as (
    select
        session_stats.project_id,
        session_stats.agent_name,
        session_stats.bucket_start as hour,
        session_stats.sessions,
        session_stats.duration_p50_ms,
        session_stats.duration_p95_ms,
        session_stats.duration_p99_ms,
        coalesce(llm_stats.llm_calls, 0) as llm_calls,
        llm_stats.llm_latency_p50_ms,
        llm_stats.llm_latency_p95_ms,
        llm_stats.llm_latency_p99_ms,
        coalesce(tool_stats.tool_calls, 0) as tool_calls,
        tool_stats.tool_latency_p50_ms,
        tool_stats.tool_latency_p95_ms,
        tool_stats.tool_latency_p99_ms,
        (select max(watermark) from {{ ref('fct_sessions') }}) as watermark
    from session_stats
    left join llm_stats
        on llm_stats.project_id = session_stats.project_id
        and llm_stats.agent_name = session_stats.agent_name
        and llm_stats.bucket_start = session_stats.bucket_start
    left join tool_stats
        on tool_stats.project_id = session_stats.project_id
        and tool_stats.agent_name = session_stats.agent_name
        and tool_stats.bucket_start = session_stats.bucket_start
)

select * from joined
