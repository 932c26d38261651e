{#- Parent and child sessions of multi-agent pipelines, both ways: a session that names a
    parent gives two rows, (child, 'parent', parent) and (parent, 'child', child), so the
    detail view of either finds the other with one index lookup. A child is often ingested
    before its parent (a parent completes last): the rows do not need the other session to
    exist yet. Incremental by the ingest watermark of the child. #}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    post_hook=[
        "analyze {{ this }}",
        "{{ drop_index(this, ['project_id', 'session_id']) }}",
    ],
    unique_key=['project_id', 'session_id', 'relation', 'related_session_id'],
    indexes=[
        {'columns': ['watermark']},
        {'columns': ['session_id']},
    ],
) }}

{%- set window = ingest_window() %}

with children as (
    select * from {{ ref('stg_bagula__agent_sessions') }}
    where {{ in_ingest_window(window) }}
        and parent_session_id is not null
        and parent_session_id <> session_id
),

links as (
    select
        project_id,
        session_id,
        'parent' as relation,
        parent_session_id as related_session_id,
        started_at as child_started_at
    from children
    union all
    select
        project_id,
        parent_session_id as session_id,
        'child' as relation,
        session_id as related_session_id,
        started_at as child_started_at
    from children
)

select
    project_id,
    session_id,
    relation,
    related_session_id,
    child_started_at,
    {{ window.upper }}::bigint as watermark
from links
