{#- A session step by step, as the detail view shows it: for each turn, what started it
    (kind 'turn': a user message, a job, ...), then its LLM and tool calls in the order they
    started, then the agent's answer ('response') and the user's feedback ('feedback').
    A view over fct_turn_details and fct_call_details: a filter on the session (and the
    project) reaches the indexes of both, below the numbering of the steps. #}
{{ config(materialized='view') }}

-- Each branch reads its model directly: a CTE read three times would be materialised,
-- whole, before the session filter applies.
with steps as (
    select
        project_id, session_id, session_started_at, agent_name, turn_number,
        0 as phase, 0 as position, null::text as call_id,
        'turn' as kind, coalesce(trigger_type, 'turn') as name, null::text as provider,
        turn_at as at, null::double precision as latency_ms,
        null::bigint as tokens_input, null::bigint as tokens_output, null::bigint as tokens_total,
        null::numeric as cost_usd, false as is_error,
        trigger_text as input_text, null::text as output_text, watermark
    from {{ ref('fct_turn_details') }}
    union all
    select
        project_id, session_id, session_started_at, agent_name, turn_number,
        1 as phase, call_position as position, call_id,
        call_kind as kind, name, provider,
        started_at as at, latency_ms,
        tokens_input, tokens_output, tokens_total,
        cost_usd, is_error,
        input_text, output_text, watermark
    from {{ ref('fct_call_details') }}
    union all
    select
        project_id, session_id, session_started_at, agent_name, turn_number,
        2 as phase, 0 as position, null::text as call_id,
        'response' as kind, 'agent' as name, null::text as provider,
        answered_at as at, null::double precision as latency_ms,
        null::bigint, null::bigint, null::bigint,
        null::numeric, false,
        null::text as input_text, agent_message as output_text, watermark
    from {{ ref('fct_turn_details') }}
    where agent_message is not null
    union all
    select
        project_id, session_id, session_started_at, agent_name, turn_number,
        3 as phase, 0 as position, null::text as call_id,
        'feedback' as kind, 'user' as name, null::text as provider,
        answered_at as at, null::double precision as latency_ms,
        null::bigint, null::bigint, null::bigint,
        null::numeric, false,
        user_feedback as input_text, null::text as output_text, watermark
    from {{ ref('fct_turn_details') }}
    where user_feedback is not null
)

select
    project_id,
    session_id,
    row_number() over (
        partition by project_id, session_id
        order by turn_number nulls last, phase, at nulls last, kind, position, call_id
    ) as step,
    turn_number,
    kind,
    name,
    provider,
    at,
    (extract(epoch from at - session_started_at) * 1000)::double precision as offset_ms,
    latency_ms,
    tokens_input,
    tokens_output,
    tokens_total,
    cost_usd,
    is_error,
    input_text,
    output_text,
    call_id,
    agent_name,
    session_started_at,
    watermark
from steps
