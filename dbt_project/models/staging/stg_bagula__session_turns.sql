with source as (
    select * from {{ source('bagula', 'session_turns') }}
),

renamed as (
    select
        project_id,
        session_id,
        turn_id,
        turn_number,
        "timestamp" as turn_at,
        trigger,
        agent_response -> 'message' as agent_message,
        user_feedback,
        ingest_txid,
        ingested_at
    from source
)

select * from renamed
