{#- One row per call of a session, LLM and tool calls in one list, with what went in and
    what came out, for the session detail view:
      llm:  input = the prompt's last 3 messages ("role: content", "(last 3 of N messages)"
            when there were more), output = the response's content (other fields of the
            response, such as tool calls, follow as JSON);
      tool: input = the arguments, output = the result, or "error: ..." then the result.
    Texts are cut at 4,000 characters with a marker saying how much is left out (the whole
    session is GET /v1/sessions/{id}). Incremental by the ingest watermark. #}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    pre_hook="set local enable_nestloop = off",
    post_hook=[
        "analyze {{ this }}",
        "{{ drop_index(this, ['project_id', 'session_id']) }}",
    ],
    unique_key=['project_id', 'session_id', 'call_kind', 'call_id'],
    indexes=[
        {'columns': ['watermark']},
        {'columns': ['session_id']},
    ],
) }}

{%- set window = ingest_window() %}
{%- set text_limit = 4000 %}
{%- set last_messages = 3 %}

with sessions as (
    select * from {{ ref('stg_bagula__agent_sessions') }}
    where {{ in_ingest_window(window) }}
),

turns as (
    select * from {{ ref('stg_bagula__session_turns') }}
    where {{ in_ingest_window(window) }}
),

llm_calls as (
    select * from {{ ref('stg_bagula__llm_calls') }}
    where {{ in_ingest_window(window) }}
),

llm_messages as (
    select * from {{ ref('stg_bagula__llm_call_messages') }}
    where {{ in_ingest_window(window) }}
),

tool_calls as (
    select * from {{ ref('stg_bagula__tool_calls') }}
    where {{ in_ingest_window(window) }}
),

llm as (
    select
        llm_calls.project_id,
        llm_calls.session_id,
        llm_calls.ingest_txid,
        llm_calls.turn_id,
        'llm' as call_kind,
        llm_calls.call_id,
        llm_calls.call_position,
        llm_calls.model as name,
        llm_calls.provider,
        llm_calls.started_at,
        llm_calls.ended_at,
        {{ call_latency_ms('llm_calls') }}::double precision as latency_ms,
        llm_calls.tokens_input,
        llm_calls.tokens_output,
        coalesce(llm_calls.tokens_total, llm_calls.tokens_input + llm_calls.tokens_output) as tokens_total,
        llm_calls.cost_usd,
        false as is_error,
        case
            when jsonb_typeof(llm_messages.messages) = 'array' then
                case
                    when jsonb_array_length(llm_messages.messages) > {{ last_messages }}
                        then '(last {{ last_messages }} of ' || jsonb_array_length(llm_messages.messages) || ' messages)' || chr(10)
                    else ''
                end
                || (
                    select string_agg(
                        coalesce(case when jsonb_typeof(m -> 'role') = 'string' then m ->> 'role' end, 'message') || ': '
                        || case
                            when jsonb_typeof(m -> 'content') = 'string' then m ->> 'content'
                                || case when (m - 'role' - 'content') <> '{}'::jsonb then ' ' || (m - 'role' - 'content')::text else '' end
                            when jsonb_typeof(m) = 'object' then (m - 'role')::text
                            when jsonb_typeof(m) = 'string' then m #>> '{}'
                            else m::text
                        end,
                        chr(10) order by n)
                    from jsonb_array_elements(llm_messages.messages) with ordinality as elements (m, n)
                    where n > jsonb_array_length(llm_messages.messages) - {{ last_messages }}
                )
            when jsonb_typeof(llm_messages.messages) = 'string' then llm_messages.messages #>> '{}'
            when jsonb_typeof(llm_messages.messages) = 'null' then null
            else llm_messages.messages::text
        end as input_text,
        case jsonb_typeof(llm_messages.response)
            when 'string' then llm_messages.response #>> '{}'
            when 'object' then
                case
                    when jsonb_typeof(llm_messages.response -> 'content') = 'string' then llm_messages.response ->> 'content'
                        || case
                            when (llm_messages.response - 'role' - 'content') <> '{}'::jsonb
                                then chr(10) || (llm_messages.response - 'role' - 'content')::text
                            else ''
                        end
                    else (llm_messages.response - 'role')::text
                end
            when 'null' then null
            else llm_messages.response::text
        end as output_text,
        llm_calls.ingested_at
    from llm_calls
    left join llm_messages
        on llm_messages.project_id = llm_calls.project_id
        and llm_messages.session_id = llm_calls.session_id
        and llm_messages.call_id = llm_calls.call_id
        and llm_messages.ingest_txid = llm_calls.ingest_txid
),

tools as (
    select
        project_id,
        session_id,
        ingest_txid,
        turn_id,
        'tool' as call_kind,
        tool_id as call_id,
        call_position,
        tool_name as name,
        null::text as provider,
        started_at,
        ended_at,
        {{ call_latency_ms() }}::double precision as latency_ms,
        null::bigint as tokens_input,
        null::bigint as tokens_output,
        null::bigint as tokens_total,
        null::numeric as cost_usd,
        is_error,
        case jsonb_typeof(arguments)
            when 'string' then arguments #>> '{}'
            when 'null' then null
            else arguments::text
        end as input_text,
        case
            when error is not null then 'error: ' || error
                || case
                    when result is not null and jsonb_typeof(result) <> 'null'
                        then chr(10) || 'result: ' || case jsonb_typeof(result) when 'string' then result #>> '{}' else result::text end
                    else ''
                end
            when jsonb_typeof(result) = 'string' then result #>> '{}'
            when jsonb_typeof(result) = 'null' then null
            else result::text
        end as output_text,
        ingested_at
    from tool_calls
),

calls as (
    select * from llm
    union all
    select * from tools
)

select
    calls.project_id,
    calls.session_id,
    calls.call_kind,
    calls.call_id,
    calls.turn_id,
    turns.turn_number,
    calls.call_position,
    sessions.agent_name,
    sessions.started_at as session_started_at,
    calls.name,
    calls.provider,
    calls.started_at,
    calls.ended_at,
    calls.latency_ms,
    calls.tokens_input,
    calls.tokens_output,
    calls.tokens_total,
    calls.cost_usd,
    calls.is_error,
    {% for column in ['input_text', 'output_text'] -%}
    case
        when length(calls.{{ column }}) > {{ text_limit }}
            then left(calls.{{ column }}, {{ text_limit }}) || '… [truncated, '
                || to_char(length(calls.{{ column }}) - {{ text_limit }}, 'FM999,999,999,999') || ' more characters]'
        else calls.{{ column }}
    end as {{ column }},
    {% endfor -%}
    calls.ingested_at,
    {{ window.upper }}::bigint as watermark
from calls
inner join sessions
    on sessions.project_id = calls.project_id
    and sessions.session_id = calls.session_id
    and sessions.ingest_txid = calls.ingest_txid
left join turns
    on turns.project_id = calls.project_id
    and turns.session_id = calls.session_id
    and turns.turn_id = calls.turn_id
    and turns.ingest_txid = calls.ingest_txid
