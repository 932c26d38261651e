{#- New ingest_txid values lie beyond the column statistics, so the planner guesses
    one row per side and nests BRIN scans (seconds per run, growing with history).
    Hash joins read each side of the window once. The analyze afterwards gives the
    aggregates and tests downstream statistics that include the rows just added. #}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    pre_hook="set local enable_nestloop = off",
    post_hook="analyze {{ this }}",
    unique_key=['project_id', 'session_id', 'call_id'],
    indexes=[
        {'columns': ['watermark']},
        {'columns': ['project_id', 'agent_name', 'session_started_at']},
        {'columns': ['project_id', 'session_id']},
    ],
) }}

{%- set window = ingest_window() %}

with llm_calls as (
    select * from {{ ref('int_llm_calls__priced') }}
    where {{ in_ingest_window(window) }}
),

sessions as (
    select * from {{ ref('stg_bagula__agent_sessions') }}
    where {{ in_ingest_window(window) }}
),

joined as (
    select
        llm_calls.project_id,
        llm_calls.session_id,
        llm_calls.call_id,
        llm_calls.turn_id,
        llm_calls.call_position,
        sessions.agent_name,
        sessions.started_at as session_started_at,
        llm_calls.provider,
        llm_calls.model,
        llm_calls.started_at,
        llm_calls.ended_at,
        llm_calls.tokens_input,
        llm_calls.tokens_output,
        coalesce(llm_calls.tokens_total, llm_calls.tokens_input + llm_calls.tokens_output) as tokens_total,
        llm_calls.tokens_cache_read,
        llm_calls.tokens_cache_write,
        llm_calls.cost_usd,
        llm_calls.client_cost_usd,
        llm_calls.estimated_cost_usd,
        llm_calls.cost_source,
        llm_calls.price_source,
        {{ call_latency_ms('llm_calls') }}::double precision as latency_ms,
        llm_calls.ingested_at,
        {{ window.upper }}::bigint as watermark
    from llm_calls
    inner join sessions
        on sessions.project_id = llm_calls.project_id
        and sessions.session_id = llm_calls.session_id
        and sessions.ingest_txid = llm_calls.ingest_txid
)

select * from joined
