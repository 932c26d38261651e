{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['project_id', 'agent_name', 'provider', 'model', 'hour'],
    indexes=[{'columns': ['watermark']}, {'columns': ['project_id', 'agent_name', 'hour']}],
) }}

with touched as (
    {{ touched_buckets('hour') }}
),

calls as (
    {{ rows_in_buckets(ref('fct_llm_calls'), 'session_started_at') }}
),

aggregated as (
    select
        project_id,
        agent_name,
        provider,
        model,
        bucket_start as hour,
        count(distinct session_id) as sessions,
        count(*) as llm_calls,
        coalesce(sum(tokens_input), 0) as tokens_input,
        coalesce(sum(tokens_output), 0) as tokens_output,
        coalesce(sum(cost_usd), 0) as cost_usd,
        (select max(watermark) from {{ ref('fct_sessions') }}) as watermark
    from calls
    group by project_id, agent_name, provider, model, bucket_start
)

select * from aggregated
