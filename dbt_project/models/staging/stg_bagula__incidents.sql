-- Incidents as detection's grouping writes them (ml.incidents), renamed; the grouping's own
-- state (column state) stays behind.
with source as (
    select * from {{ source('bagula', 'incidents') }}
),

renamed as (
    select
        incident_id,
        project_id,
        agent_name,
        kind,
        status,
        first_seen,
        last_seen,
        opened_at,
        resolved_at,
        resolution,
        opened_severity,
        peak_severity,
        current_severity,
        affected_sessions,
        span_sessions,
        traffic_share,
        verdict_count,
        summary,
        example_session_ids,
        figures,
        acknowledged_at,
        acknowledged_by as acknowledged_by_key_id,
        resolved_by as resolved_by_key_id,
        updated_at
    from source
)

select * from renamed
