with source as (
    select * from {{ source('bagula', 'anomalies') }}
),

renamed as (
    select
        anomaly_id,
        project_id,
        session_id,
        agent_name,
        session_started_at,
        detected_at,
        anomaly_type,
        severity,
        score,
        explanation,
        details,
        model_version,
        resolved as is_resolved,
        resolved_at
    from source
)

select * from renamed
