-- Anomalies and regressions as one list of verdicts, what the Regressions and anomalies
-- dashboard reads. A view, like its two sources: verdicts show as soon as detection writes them.

with anomalies as (
    select * from {{ ref('fct_anomalies') }}
),

regressions as (
    select * from {{ ref('fct_regressions') }}
),

verdicts as (
    select
        'anomaly' as verdict_kind,
        anomaly_type as verdict_type,
        anomaly_id as verdict_id,
        project_id,
        session_id,
        agent_name,
        -- the session the verdict is about (detection time when unknown)
        coalesce(session_started_at, detected_at) as session_started_at,
        detected_at,
        severity,
        score,
        explanation,
        is_resolved,
        resolved_at
    from anomalies
    union all
    select
        'regression' as verdict_kind,
        'regression' as verdict_type,
        regression_id as verdict_id,
        project_id,
        session_id,
        agent_name,
        coalesce(session_started_at, detected_at) as session_started_at,
        detected_at,
        severity,
        score,
        explanation,
        is_resolved,
        resolved_at
    from regressions
),

ranked as (
    select
        verdicts.*,
        case severity when 'critical' then 3 when 'major' then 2 else 1 end as severity_rank
    from verdicts
)

select
    verdict_kind, verdict_type, verdict_id, project_id, session_id, agent_name, session_started_at,
    detected_at, severity, severity_rank, score, explanation, is_resolved, resolved_at
from ranked
