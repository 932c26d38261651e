{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['project_id', 'agent_name', 'tool_name', 'day'],
    on_schema_change='append_new_columns',
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

-- Mergeable latencies (migration 0010): a percentile over any range of days reads these rows,
-- not the calls.
latency_buckets as (
    select
        project_id,
        agent_name,
        tool_name,
        bucket_start,
        public.bagula_latency_bucket(latency_ms) as latency_bucket,
        count(*) as calls
    from tool_calls
    where latency_ms is not null
    group by project_id, agent_name, tool_name, bucket_start, latency_bucket
),

latency_histograms as materialized (
    select
        project_id,
        agent_name,
        tool_name,
        bucket_start,
        jsonb_object_agg(latency_bucket, calls) as latency_histogram
    from latency_buckets
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
        latency_histograms.latency_histogram,
        (select max(watermark) from {{ ref('fct_sessions') }}) as watermark
    from per_tool
    inner join sessions_per_day
        on sessions_per_day.project_id = per_tool.project_id
        and sessions_per_day.agent_name = per_tool.agent_name
        and sessions_per_day.bucket_start = per_tool.bucket_start
    left join latency_histograms
        on latency_histograms.project_id = per_tool.project_id
        and latency_histograms.agent_name = per_tool.agent_name
        and latency_histograms.tool_name = per_tool.tool_name
        and latency_histograms.bucket_start = per_tool.bucket_start
)

select * from joined
