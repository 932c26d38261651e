-- The prompt and response of each LLM call (stg_bagula__llm_calls keeps the figures; these
-- documents are large, so only the session detail and search models read them).
with source as (
    select * from {{ source('bagula', 'llm_calls') }}
),

renamed as (
    select
        project_id,
        session_id,
        call_id,
        messages,
        response,
        ingest_txid,
        ingested_at
    from source
)

select * from renamed
