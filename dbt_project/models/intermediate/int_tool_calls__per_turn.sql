-- Per turn: how long the agent waited on its tools (first start to last end), which
-- is less than their summed latency when they ran in parallel. Grouped by ingest_txid
-- too, so a bound on it is pushed below the aggregation.
with tool_calls as (
    select * from {{ ref('stg_bagula__tool_calls') }}
),

per_turn as (
    select
        project_id,
        session_id,
        ingest_txid,
        turn_id,
        count(*) as tool_call_count,
        -- numeric (extract gives one): summed exactly, the same whatever order the turns come in
        coalesce(extract(epoch from max(ended_at) - min(started_at)) * 1000, 0) as tool_wall_ms
    from tool_calls
    group by project_id, session_id, ingest_txid, turn_id
)

select * from per_turn
