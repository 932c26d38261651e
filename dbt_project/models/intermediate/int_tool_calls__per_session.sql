with tool_calls as (
    select * from {{ ref('stg_bagula__tool_calls') }}
),

per_session as (
    select
        project_id,
        session_id,
        ingest_txid,
        count(*) as tool_call_count,
        count(*) filter (where is_error) as tool_error_count,
        coalesce(sum(({{ call_latency_ms() }})::numeric), 0) as tool_latency_ms,
        string_agg(distinct tool_name, ',' order by tool_name) as tools_used,
        -- in the order they ran; parallel calls start together, so then by position
        string_agg(tool_name, ',' order by started_at, call_position, tool_id) as tool_sequence
    from tool_calls
    group by project_id, session_id, ingest_txid
)

select * from per_session
