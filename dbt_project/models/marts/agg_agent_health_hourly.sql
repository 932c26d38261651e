{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['project_id', 'agent_name', 'hour'],
    indexes=[{'columns': ['watermark']}, {'columns': ['project_id', 'agent_name', 'hour']}],
) }}

with touched as (
    {{ touched_buckets('hour') }}
),

sessions as (
    {{ rows_in_buckets(ref('fct_sessions'), 'started_at') }}
),

aggregated as (
    select
        project_id,
        agent_name,
        bucket_start as hour,
        count(*) as sessions,
        count(*) filter (where is_success) as successful_sessions,
        avg(case when is_success then 1.0 else 0.0 end)::double precision as success_rate,
        avg(user_satisfaction)::double precision as avg_satisfaction,
        avg(confidence)::double precision as avg_confidence,
        avg(total_cost_usd)::double precision as avg_cost_usd,
        sum(total_cost_usd) as total_cost_usd,
        coalesce(sum(estimated_cost_usd), 0) as estimated_cost_usd,
        count(*) filter (where cost_source = 'unknown') as unknown_cost_sessions,
        (select max(watermark) from {{ ref('fct_sessions') }}) as watermark
    from sessions
    group by project_id, agent_name, bucket_start
)

select * from aggregated
