-- A view: detection writes verdicts after the marts are built, and readers
-- (dashboards, SQL users) should see them at once, without another dbt run.

with anomalies as (
    select * from {{ ref('stg_bagula__anomalies') }}
),

final as (
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
        details::text as details,
        model_version,
        is_resolved,
        resolved_at
    from anomalies
)

select * from final
