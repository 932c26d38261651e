with source as (
    select * from {{ source('bagula', 'agent_sessions') }}
),

renamed as (
    select
        project_id,
        session_id,
        api_key_id,
        agent_name,
        user_id,
        parent_session_id,
        start_time as started_at,
        end_time as ended_at,
        initial_request,
        status,
        (final_outcome ->> 'userSatisfaction')::numeric as user_satisfaction,
        (final_outcome ->> 'confidence')::numeric as confidence,
        final_outcome -> 'result' as final_result,
        metadata,
        tags,
        ingest_txid,
        ingested_at
    from source
)

select * from renamed
