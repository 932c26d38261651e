-- The session frame detection judges: one row per session, exactly the columns and
-- types of ml.schema.SESSION_SCHEMA (a test holds the two together). Detection and
-- baseline pinning read it; a view, so it is as fresh as fct_sessions.

with sessions as (
    select * from {{ ref('fct_sessions') }}
),

frame as (
    select
        project_id,
        session_id,
        parent_session_id,
        agent_name,
        started_at,
        duration_ms,
        turn_count::bigint as turn_count,
        llm_call_count::bigint as llm_call_count,
        tool_call_count::bigint as tool_call_count,
        tool_error_count::bigint as tool_error_count,
        tokens_input::bigint as tokens_input,
        tokens_output::bigint as tokens_output,
        tokens_total::bigint as tokens_total,
        peak_tokens_input::bigint as peak_tokens_input,
        total_cost_usd::double precision as total_cost_usd,
        llm_latency_ms,
        tool_latency_ms,
        tool_wall_ms,
        models,
        providers,
        tool_sequence,
        status,
        user_satisfaction::double precision as user_satisfaction,
        confidence::double precision as confidence
    from sessions
)

select * from frame
