-- One row per incident (ml.incidents groups verdicts into them), what the Incidents dashboard
-- reads: open ones first. A view, like the verdicts it groups: an acknowledgement or a
-- resolution shows at once, without a build. Discarded incidents (pending ones that went
-- quiet without ever opening) are left out, as the API leaves them out.

with incidents as (
    select * from {{ ref('stg_bagula__incidents') }}
    where status <> 'discarded'
),

projects as (
    select * from {{ ref('stg_bagula__projects') }}
),

members as (
    select * from {{ ref('stg_bagula__incident_members') }}
)

select
    incidents.incident_id,
    incidents.project_id,
    projects.project_name,
    incidents.agent_name,
    incidents.kind,
    incidents.status,
    -- open first, then pending (seen, not yet enough evidence), then resolved
    case incidents.status when 'open' then 1 when 'pending' then 2 else 3 end as status_order,
    incidents.peak_severity,
    case incidents.peak_severity when 'critical' then 3 when 'major' then 2 else 1 end as peak_severity_rank,
    incidents.current_severity,
    incidents.opened_severity,
    incidents.first_seen,
    incidents.last_seen,
    incidents.opened_at,
    incidents.resolved_at,
    incidents.resolution,
    incidents.acknowledged_at,
    incidents.acknowledged_by_key_id,
    incidents.resolved_by_key_id,
    -- per incident through the members' primary key: cheap for the few rows a chart reads
    member_counts.member_count,
    member_counts.member_session_count,
    incidents.affected_sessions,
    incidents.span_sessions,
    incidents.traffic_share,
    incidents.verdict_count,
    incidents.summary,
    incidents.example_session_ids[1] as example_session_id,
    cardinality(incidents.example_session_ids) as example_session_count,
    incidents.updated_at
from incidents
left join projects on projects.project_id = incidents.project_id
cross join lateral (
    select
        count(*) as member_count,
        count(distinct members.session_id) as member_session_count
    from members
    where members.incident_id = incidents.incident_id
) as member_counts
