with turns as (
    select * from {{ ref('stg_bagula__session_turns') }}
),

per_session as (
    select
        project_id,
        session_id,
        ingest_txid,
        count(*) as turn_count
    from turns
    group by project_id, session_id, ingest_txid
)

select * from per_session
