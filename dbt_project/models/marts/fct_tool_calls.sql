{#- New ingest_txid values lie beyond the column statistics, so the planner guesses
    one row per side and nests BRIN scans (seconds per run, growing with history).
    Hash joins read each side of the window once. The analyze afterwards gives the
    aggregates and tests downstream statistics that include the rows just added. #}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    pre_hook="set local enable_nestloop = off",
    post_hook="analyze {{ this }}",
    unique_key=['project_id', 'session_id', 'tool_id'],
    indexes=[
        {'columns': ['watermark']},
        {'columns': ['project_id', 'agent_name', 'session_started_at']},
        {'columns': ['project_id', 'session_id']},
    ],
) }}

{%- set window = ingest_window() %}

with tool_calls as (
    select * from {{ ref('stg_bagula__tool_calls') }}
    where {{ in_ingest_window(window) }}
),

sessions as (
    select * from {{ ref('stg_bagula__agent_sessions') }}
    where {{ in_ingest_window(window) }}
),

joined as (
    select
        tool_calls.project_id,
        tool_calls.session_id,
        tool_calls.tool_id,
        tool_calls.turn_id,
        tool_calls.call_position,
        sessions.agent_name,
        sessions.started_at as session_started_at,
        tool_calls.tool_name,
        tool_calls.started_at,
        tool_calls.ended_at,
        tool_calls.is_error,
        tool_calls.error,
        {{ call_latency_ms('tool_calls') }}::double precision as latency_ms,
        tool_calls.ingested_at,
        {{ window.upper }}::bigint as watermark
    from tool_calls
    inner join sessions
        on sessions.project_id = tool_calls.project_id
        and sessions.session_id = tool_calls.session_id
        and sessions.ingest_txid = tool_calls.ingest_txid
)

select * from joined
