{#- One row per turn, for the session detail view: what started it (a user message, a job),
    what the agent answered, the user's feedback, and the turn's calls rolled up. Texts are
    cut at 4,000 characters with a marker saying how much is left out. Incremental by the
    ingest watermark, like fct_llm_calls. #}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    pre_hook="set local enable_nestloop = off",
    post_hook=[
        "analyze {{ this }}",
        "{{ drop_index(this, ['project_id', 'session_id']) }}",
    ],
    unique_key=['project_id', 'session_id', 'turn_id'],
    indexes=[
        {'columns': ['watermark']},
        {'columns': ['session_id']},
    ],
) }}

{%- set window = ingest_window() %}
{%- set text_limit = 4000 %}

with turns as (
    select * from {{ ref('stg_bagula__session_turns') }}
    where {{ in_ingest_window(window) }}
),

sessions as (
    select * from {{ ref('stg_bagula__agent_sessions') }}
    where {{ in_ingest_window(window) }}
),

llm as (
    select
        project_id,
        session_id,
        ingest_txid,
        turn_id,
        count(*) as llm_call_count,
        coalesce(sum(coalesce(tokens_total, tokens_input + tokens_output)), 0) as tokens_total,
        coalesce(sum(cost_usd), 0) as cost_usd,
        coalesce(sum(({{ call_latency_ms() }})::numeric), 0) as llm_latency_ms,
        max(ended_at) as last_ended_at
    from {{ ref('stg_bagula__llm_calls') }}
    where {{ in_ingest_window(window) }}
    group by project_id, session_id, ingest_txid, turn_id
),

tools as (
    select
        project_id,
        session_id,
        ingest_txid,
        turn_id,
        count(*) as tool_call_count,
        count(*) filter (where is_error) as tool_error_count,
        coalesce(sum(({{ call_latency_ms() }})::numeric), 0) as tool_latency_ms,
        max(ended_at) as last_ended_at
    from {{ ref('stg_bagula__tool_calls') }}
    where {{ in_ingest_window(window) }}
    group by project_id, session_id, ingest_txid, turn_id
),

texts as (
    select
        project_id,
        session_id,
        turn_id,
        ingest_txid,
        case when jsonb_typeof(trigger) = 'object' then trigger ->> 'type' end as trigger_type,
        -- a trigger's words: its content when it has one, else the whole document
        case
            when jsonb_typeof(trigger -> 'content') = 'string' then trigger ->> 'content'
            when jsonb_typeof(trigger) = 'string' then trigger #>> '{}'
            when jsonb_typeof(trigger) = 'object' and trigger ? 'content' then (trigger -> 'content')::text
            else trigger::text
        end as trigger_text,
        case jsonb_typeof(agent_message)
            when 'string' then agent_message #>> '{}'
            when 'null' then null
            else agent_message::text
        end as agent_message,
        case jsonb_typeof(user_feedback)
            when 'null' then null
            else user_feedback::text
        end as user_feedback
    from turns
)

select
    turns.project_id,
    turns.session_id,
    turns.turn_id,
    turns.turn_number,
    sessions.agent_name,
    sessions.started_at as session_started_at,
    turns.turn_at,
    -- when the agent could answer: its last call's end (the turn's timestamp without calls)
    coalesce(greatest(llm.last_ended_at, tools.last_ended_at), turns.turn_at) as answered_at,
    texts.trigger_type,
    {% for column in ['trigger_text', 'agent_message', 'user_feedback'] -%}
    case
        when length(texts.{{ column }}) > {{ text_limit }}
            then left(texts.{{ column }}, {{ text_limit }}) || '… [truncated, '
                || to_char(length(texts.{{ column }}) - {{ text_limit }}, 'FM999,999,999,999') || ' more characters]'
        else texts.{{ column }}
    end as {{ column }},
    {% endfor -%}
    coalesce(llm.llm_call_count, 0) as llm_call_count,
    coalesce(tools.tool_call_count, 0) as tool_call_count,
    coalesce(tools.tool_error_count, 0) as tool_error_count,
    coalesce(llm.tokens_total, 0) as tokens_total,
    coalesce(llm.cost_usd, 0) as cost_usd,
    coalesce(llm.llm_latency_ms, 0)::double precision as llm_latency_ms,
    coalesce(tools.tool_latency_ms, 0)::double precision as tool_latency_ms,
    turns.ingested_at,
    {{ window.upper }}::bigint as watermark
from turns
inner join sessions
    on sessions.project_id = turns.project_id
    and sessions.session_id = turns.session_id
    and sessions.ingest_txid = turns.ingest_txid
inner join texts
    on texts.project_id = turns.project_id
    and texts.session_id = turns.session_id
    and texts.turn_id = turns.turn_id
    and texts.ingest_txid = turns.ingest_txid
left join llm
    on llm.project_id = turns.project_id
    and llm.session_id = turns.session_id
    and llm.turn_id = turns.turn_id
    and llm.ingest_txid = turns.ingest_txid
left join tools
    on tools.project_id = turns.project_id
    and tools.session_id = turns.session_id
    and tools.turn_id = turns.turn_id
    and tools.ingest_txid = turns.ingest_txid
