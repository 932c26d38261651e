-- A view, like fct_anomalies: verdicts are visible as soon as detection writes them.

with regressions as (
    select * from {{ ref('stg_bagula__regressions') }}
),

final as (
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
        differences::text as differences,
        is_resolved,
        resolved_at
    from regressions
)

select * from final
