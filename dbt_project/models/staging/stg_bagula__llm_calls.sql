with source as (
    select * from {{ source('bagula', 'llm_calls') }}
),

renamed as (
    select
        project_id,
        session_id,
        turn_id,
        call_id,
        position as call_position,
        provider,
        model,
        start_time as started_at,
        end_time as ended_at,
        -- bigint: sums and input + output of values that each fit 32 bits may not
        tokens_input::bigint as tokens_input,
        tokens_output::bigint as tokens_output,
        tokens_total::bigint as tokens_total,
        cost_usd,
        tokens_cache_read::bigint as tokens_cache_read,
        tokens_cache_write::bigint as tokens_cache_write,
        estimated_cost_usd,
        price_source,
        latency_ms,
        ingest_txid,
        ingested_at
    from source
)

select * from renamed
