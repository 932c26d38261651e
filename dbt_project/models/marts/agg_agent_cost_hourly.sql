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
        coalesce(sum(estimated_cost_usd), 0) as estimated_cost_usd,
        count(*) filter (where cost_source = 'unknown') as unknown_cost_calls,
        coalesce(sum(coalesce(tokens_input, 0) + coalesce(tokens_output, 0)) filter (where cost_source = 'unknown'), 0)
            as unknown_cost_tokens,
        (select max(watermark) from {{ ref('fct_sessions') }}) as watermark
    from calls
    group by project_id, agent_name, provider, model, bucket_start
)

select * from aggregated
