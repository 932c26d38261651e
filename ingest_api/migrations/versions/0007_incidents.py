"""Incidents: the verdicts of one project, agent and kind that belong together, grouped by
``ml.incidents``; their memberships and events (opened, escalated, resolved); alerts per
incident event, routed per project.

* ``incidents`` as ``ml.incidents.INCIDENT_SCHEMA`` has them (``state`` kept for the next
  update), plus what users do to them (acknowledged, resolved by hand);
* ``anomalies.grouped_at`` / ``regressions.grouped_at``: set in the transaction that stores
  the grouping of the verdict, so a verdict is grouped exactly once however runs fail;
* ``incident_events`` keyed by their deterministic ``event_id``; an alert per event (source
  ``incident``), created with the event, so each is alerted exactly once;
* ``alert_routes``: a webhook and a minimum severity per project (the global webhook
  otherwise); delivery pauses per destination; ``bagula_alert_incident_event()``: which
  events page whom, one rule for detection and for a hand's resolution.

Revision ID: 0006a
Revises: 0005
Create Date: 2026-11-30
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        create table incidents (
            incident_id uuid primary key,
            project_id uuid not null references projects (project_id),
            agent_name varchar(255) not null,
            kind varchar(50) not null,
            status varchar(20) not null check (status in ('pending', 'open', 'resolved', 'discarded')),
            first_seen timestamptz not null,
            last_seen timestamptz not null,
            opened_at timestamptz,
            resolved_at timestamptz,
            resolution varchar(10) check (resolution in ('quiet', 'hand')),
            opened_severity varchar(20),
            peak_severity varchar(20) not null,
            current_severity varchar(20) not null,
            affected_sessions integer not null,
            span_sessions integer not null,
            traffic_share double precision,
            verdict_count integer not null,
            summary text not null,
            example_session_ids uuid[] not null,
            figures jsonb,
            state jsonb,
            acknowledged_at timestamptz,
            acknowledged_by uuid,  -- the API key that acknowledged it
            resolved_by uuid,  -- the API key that resolved it by hand
            updated_at timestamptz not null default now()
        );
        -- Lists page by first_seen, which never changes (last_seen grows with the incident).
        create index incidents_project_idx on incidents (project_id, first_seen desc, incident_id desc);
        create index incidents_agent_idx on incidents (project_id, agent_name, first_seen desc, incident_id desc);
        create index incidents_active_idx on incidents (project_id) where status in ('pending', 'open');

        create table incident_members (
            incident_id uuid not null references incidents (incident_id) on delete cascade,
            project_id uuid not null,
            agent_name varchar(255) not null,
            session_id uuid not null,
            verdict_type varchar(50) not null,
            session_started_at timestamptz not null,
            severity varchar(20) not null,
            primary key (incident_id, session_id, verdict_type)
        );
        create index incident_members_session_idx on incident_members (project_id, session_id);

        create table incident_events (
            event_id uuid primary key,
            incident_id uuid not null,
            project_id uuid not null,
            agent_name varchar(255) not null,
            kind varchar(50) not null,
            event varchar(20) not null check (event in ('opened', 'escalated', 'resolved')),
            severity varchar(20) not null,
            at timestamptz not null,
            summary text not null,
            affected_sessions integer not null,
            traffic_share double precision,
            example_session_ids uuid[] not null,
            created_at timestamptz not null default now()
        );
        create index incident_events_incident_idx on incident_events (incident_id, at);

        -- Grouping keeps a watermark per project ('incidents:<project id>').
        alter table pipeline_watermarks alter column name type varchar(80);

        alter table anomalies add column grouped_at timestamptz;
        alter table regressions add column grouped_at timestamptz;
        create index anomalies_ungrouped_idx on anomalies (project_id) where grouped_at is null;
        create index regressions_ungrouped_idx on regressions (project_id) where grouped_at is null;

        create table alert_routes (
            project_id uuid primary key references projects (project_id),
            webhook_url text not null,
            min_severity varchar(20) not null default 'critical'
                check (min_severity in ('minor', 'major', 'critical')),
            updated_at timestamptz not null default now()
        );

        -- Alerts are per incident event now; verdict alerts already in the outbox still deliver.
        alter table alerts drop constraint alerts_source_check;
        alter table alerts add constraint alerts_source_check
            check (source in ('anomaly', 'regression', 'incident'));
        alter table alerts alter column session_id drop not null;
        alter table alerts add column destination varchar(64) not null default 'default';

        -- The one rule of which incident events page whom (detection's grouping and a hand's
        -- resolution both call it): an opening or escalation at or above the route's minimum
        -- severity (the project's route, else the platform default passed in); a resolution
        -- wherever the incident paged before. Each event is alerted at most once.
        create function bagula_alert_incident_event(event uuid, default_min_severity text) returns boolean
        language sql as $fn$
            with routed as (
                select e.*, coalesce(r.project_id::text, 'default') as destination,
                       coalesce(r.min_severity, default_min_severity) as minimum
                from incident_events e left join alert_routes r using (project_id)
                where e.event_id = bagula_alert_incident_event.event
            ),
            inserted as (
                insert into alerts (project_id, source, source_id, agent_name, severity, destination)
                select project_id, 'incident', event_id, agent_name, severity, destination from routed
                where case when routed.event = 'resolved' then exists (
                               select 1 from alerts a join incident_events x on x.event_id = a.source_id
                               where a.source = 'incident' and x.incident_id = routed.incident_id
                                 and x.event <> 'resolved')
                           else array_position(array['minor', 'major', 'critical']::text[], routed.severity::text)
                                >= array_position(array['minor', 'major', 'critical']::text[], routed.minimum::text)
                      end
                on conflict do nothing
                returning 1
            )
            select exists (select 1 from inserted)
        $fn$;

        -- Delivery pauses per destination: one project's broken webhook stops only its alerts.
        alter table alert_delivery drop column singleton;
        alter table alert_delivery add column destination varchar(64) primary key default 'default';
    """)


def downgrade() -> None:
    op.execute("""
        drop function if exists bagula_alert_incident_event(uuid, text);
        drop table if exists incident_events, incident_members, incidents, alert_routes;
        alter table anomalies drop column grouped_at;
        alter table regressions drop column grouped_at;
        delete from alerts where source = 'incident';
        alter table alerts drop column destination;
        alter table alerts alter column session_id set not null;
        alter table alerts drop constraint alerts_source_check;
        alter table alerts add constraint alerts_source_check check (source in ('anomaly', 'regression'));
        delete from alert_delivery where destination <> 'default';
        alter table alert_delivery drop column destination;
        alter table alert_delivery add column singleton boolean primary key default true check (singleton);
    """)
