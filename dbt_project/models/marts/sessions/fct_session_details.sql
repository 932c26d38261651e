{#- The header of the session detail view: fct_sessions' figures with the session's own
    words (request, outcome, metadata). Built from the fct_sessions rows stamped after this
    model's own largest watermark, so it holds exactly the sessions fct_sessions holds, with
    the same figures; the texts come from the raw session row (one index lookup each).
    Long texts are cut with a marker that says how much is left out; the whole session is
    GET /v1/sessions/{id}. #}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['project_id', 'session_id'],
    post_hook="analyze {{ this }}",
    indexes=[
        {'columns': ['watermark']},
        {'columns': ['project_id', 'session_id'], 'unique': true},
        {'columns': ['session_id']},
        {'columns': ['project_id', 'started_at']},
    ],
) }}

{%- set since = aggregate_watermark() %}
{%- set text_limit = 4000 %}

with sessions as (
    select * from {{ ref('fct_sessions') }}
    where watermark > {{ since }}
),

raw as (
    -- quarantined batches carry a negative ingest_txid (never in fct_sessions anyway)
    select * from {{ ref('stg_bagula__agent_sessions') }}
    where ingest_txid >= 0
),

texts as (
    select
        sessions.project_id,
        sessions.session_id,
        raw.initial_request,
        case jsonb_typeof(raw.final_result)
            when 'string' then raw.final_result #>> '{}'
            else raw.final_result::text
        end as outcome,
        case when raw.metadata is null or raw.metadata = '{}'::jsonb then null else raw.metadata::text end as metadata
    from sessions
    inner join raw
        on raw.project_id = sessions.project_id
        and raw.session_id = sessions.session_id
        and raw.started_at = sessions.started_at
),

cut as (
    select
        project_id,
        session_id,
        {% for column in ['initial_request', 'outcome', 'metadata'] -%}
        case
            when length({{ column }}) > {{ text_limit }}
                then left({{ column }}, {{ text_limit }}) || '… [truncated, '
                    || to_char(length({{ column }}) - {{ text_limit }}, 'FM999,999,999,999') || ' more characters]'
            else {{ column }}
        end as {{ column }}{{ ',' if not loop.last }}
        {% endfor %}
    from texts
)

select
    sessions.project_id,
    sessions.session_id,
    sessions.agent_name,
    sessions.user_id,
    sessions.parent_session_id,
    sessions.started_at,
    sessions.ended_at,
    sessions.duration_ms,
    sessions.status,
    sessions.is_success,
    sessions.user_satisfaction,
    sessions.confidence,
    cut.initial_request,
    cut.outcome,
    sessions.turn_count,
    sessions.llm_call_count,
    sessions.tool_call_count,
    sessions.tool_error_count,
    sessions.tokens_input,
    sessions.tokens_output,
    sessions.tokens_total,
    sessions.total_cost_usd,
    sessions.llm_latency_ms,
    sessions.tool_latency_ms,
    sessions.models,
    sessions.providers,
    sessions.tools_used,
    sessions.tags,
    cut.metadata,
    sessions.watermark
from sessions
left join cut
    on cut.project_id = sessions.project_id
    and cut.session_id = sessions.session_id
