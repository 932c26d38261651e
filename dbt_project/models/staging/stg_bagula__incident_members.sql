-- The verdicts each incident holds (one row per session and verdict type), renamed.
with source as (
    select * from {{ source('bagula', 'incident_members') }}
),

renamed as (
    select
        incident_id,
        project_id,
        agent_name,
        session_id,
        verdict_type,
        session_started_at,
        severity
    from source
)

select * from renamed
