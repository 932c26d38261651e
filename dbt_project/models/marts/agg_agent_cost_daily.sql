{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['project_id', 'agent_name', 'provider', 'model', 'day'],
    indexes=[{'columns': ['watermark']}, {'columns': ['project_id', 'agent_name', 'day']}],
) }}

-- A session counts in the one hour (and day) it started, so hours add up to days.
with touched as (
    select distinct
        project_id,
        agent_name,
        {{ utc_bucket('day', 'hour') }} as day_start
    from {{ ref('agg_agent_cost_hourly') }}
    where watermark > {{ aggregate_watermark() }}
),

hours as (
    select hourly.*, touched.day_start
    from touched
    inner join (select * from {{ ref('agg_agent_cost_hourly') }}) as hourly
        on hourly.project_id = touched.project_id
        and hourly.agent_name = touched.agent_name
        and {{ utc_bucket('day', 'hourly.hour') }} = touched.day_start
        and hourly.hour >= touched.day_start
        and hourly.hour < touched.day_start + interval '1 day'
),

aggregated as (
    select
        project_id,
        agent_name,
        provider,
        model,
        (day_start at time zone 'utc')::date as day,
        sum(sessions) as sessions,
        sum(llm_calls) as llm_calls,
        sum(tokens_input) as tokens_input,
        sum(tokens_output) as tokens_output,
        sum(cost_usd) as cost_usd,
        sum(estimated_cost_usd) as estimated_cost_usd,
        sum(unknown_cost_calls) as unknown_cost_calls,
        sum(unknown_cost_tokens) as unknown_cost_tokens,
        (select max(watermark) from {{ ref('agg_agent_cost_hourly') }}) as watermark
    from hours
    group by project_id, agent_name, provider, model, day_start
)

select * from aggregated
