{#- New ingest_txid values lie beyond the column statistics, so the planner guesses
    one row per side and nests BRIN scans (seconds per run, growing with history).
    Hash joins read each side of the window once. The analyze afterwards gives the
    aggregates and tests downstream statistics that include the rows just added.
    The index on started_at alone serves the Session explorer's newest sessions across
    projects (a week sorted: about 1 s at a million sessions).
    The agent's index carries what GET /v1/agents/{name}/metrics aggregates, so a week of a busy
    agent is read from the index alone (45,000 sessions: 125 ms with the table, 25-37 ms
    from the index), once autovacuum has marked the new rows visible: after 0.5 % new rows, not 20 %. #}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    pre_hook="set local enable_nestloop = off",
    post_hook=[
        "analyze {{ this }}",
        "{{ ensure_index(this, ['started_at']) }}",
        "{{ ensure_index(this, ['project_id', 'agent_name', 'started_at'],
                         include=['is_success', 'total_cost_usd', 'duration_ms', 'user_satisfaction']) }}",
        "{{ drop_index(this, ['project_id', 'agent_name', 'started_at']) }}",
        "{{ vacuum_after_inserts(this, 0.005) }}",
    ],
    unique_key=['project_id', 'session_id'],
    indexes=[
        {'columns': ['watermark']},
        {'columns': ['project_id', 'session_id'], 'unique': true},
        {'columns': ['session_id']},
        {'columns': ['started_at']},
    ],
) }}

{%- set window = ingest_window() %}

with sessions as (
    select * from {{ ref('stg_bagula__agent_sessions') }}
    where {{ in_ingest_window(window) }}
),

llm as (
    select * from {{ ref('int_llm_calls__per_session') }}
    where {{ in_ingest_window(window) }}
),

tools as (
    select * from {{ ref('int_tool_calls__per_session') }}
    where {{ in_ingest_window(window) }}
),

turns as (
    select * from {{ ref('int_session_turns__per_session') }}
    where {{ in_ingest_window(window) }}
),

tool_walls as (
    select project_id, session_id, ingest_txid, sum(tool_wall_ms) as tool_wall_ms
    from {{ ref('int_tool_calls__per_turn') }}
    where {{ in_ingest_window(window) }}
    group by project_id, session_id, ingest_txid
),

joined as (
    -- A session and its calls are written in one transaction: same ingest_txid.
    select
        sessions.session_id,
        sessions.project_id,
        sessions.agent_name,
        sessions.user_id,
        sessions.parent_session_id,
        sessions.started_at,
        sessions.ended_at,
        (extract(epoch from sessions.ended_at - sessions.started_at) * 1000)::double precision as duration_ms,
        coalesce(turns.turn_count, 0) as turn_count,
        coalesce(llm.llm_call_count, 0) as llm_call_count,
        coalesce(tools.tool_call_count, 0) as tool_call_count,
        coalesce(tools.tool_error_count, 0) as tool_error_count,
        coalesce(llm.tokens_input, 0) as tokens_input,
        coalesce(llm.tokens_output, 0) as tokens_output,
        coalesce(llm.tokens_total, 0) as tokens_total,
        coalesce(llm.peak_tokens_input, 0) as peak_tokens_input,
        coalesce(llm.total_cost_usd, 0) as total_cost_usd,
        coalesce(llm.estimated_cost_usd, 0) as estimated_cost_usd,
        coalesce(llm.unknown_cost_calls, 0) as unknown_cost_calls,
        case
            when llm.unknown_cost_calls > 0 then 'unknown'
            when llm.estimated_cost_calls > 0 then 'price_table'
            else 'client'
        end as cost_source,
        coalesce(llm.llm_latency_ms, 0)::double precision as llm_latency_ms,
        coalesce(tools.tool_latency_ms, 0)::double precision as tool_latency_ms,
        coalesce(tool_walls.tool_wall_ms, 0)::double precision as tool_wall_ms,
        coalesce(llm.models, '') as models,
        coalesce(llm.providers, '') as providers,
        coalesce(tools.tools_used, '') as tools_used,
        coalesce(tools.tool_sequence, '') as tool_sequence,
        sessions.status,
        sessions.status = 'success' as is_success,
        sessions.user_satisfaction,
        sessions.confidence,
        array_to_string(sessions.tags, ',') as tags,
        sessions.ingested_at,
        {{ window.upper }}::bigint as watermark
    from sessions
    left join llm
        on llm.project_id = sessions.project_id
        and llm.session_id = sessions.session_id
        and llm.ingest_txid = sessions.ingest_txid
    left join tools
        on tools.project_id = sessions.project_id
        and tools.session_id = sessions.session_id
        and tools.ingest_txid = sessions.ingest_txid
    left join turns
        on turns.project_id = sessions.project_id
        and turns.session_id = sessions.session_id
        and turns.ingest_txid = sessions.ingest_txid
    left join tool_walls
        on tool_walls.project_id = sessions.project_id
        and tool_walls.session_id = sessions.session_id
        and tool_walls.ingest_txid = sessions.ingest_txid
)

select * from joined
