with source as (
    select * from {{ source('bagula', 'tool_calls') }}
),

renamed as (
    select
        project_id,
        session_id,
        turn_id,
        tool_id,
        position as call_position,
        tool_name,
        arguments,
        start_time as started_at,
        end_time as ended_at,
        result,
        error,
        error is not null as is_error,
        latency_ms,
        ingest_txid,
        ingested_at
    from source
)

select * from renamed
