with source as (
    select * from {{ source('bagula', 'regressions') }}
),

renamed as (
    select
        regression_id,
        project_id,
        session_id,
        agent_name,
        baseline_id,
        session_started_at,
        detected_at,
        severity,
        score,
        explanation,
        differences,
        resolved as is_resolved,
        resolved_at
    from source
)

select * from renamed
