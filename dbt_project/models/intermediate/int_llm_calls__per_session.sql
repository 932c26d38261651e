-- Grouped by ingest_txid too, so a bound on it is pushed below the aggregation.
with llm_calls as (
    select * from {{ ref('int_llm_calls__priced') }}
),

per_session as (
    select
        project_id,
        session_id,
        ingest_txid,
        count(*) as llm_call_count,
        coalesce(sum(tokens_input), 0) as tokens_input,
        coalesce(sum(tokens_output), 0) as tokens_output,
        coalesce(sum(coalesce(tokens_total, tokens_input + tokens_output)), 0) as tokens_total,
        -- the largest prompt: how far the context grew
        coalesce(max(tokens_input), 0) as peak_tokens_input,
        -- every call's cost, the client's or the price table's; calls of unknown cost are counted
        coalesce(sum(cost_usd), 0) as total_cost_usd,
        coalesce(sum(estimated_cost_usd), 0) as estimated_cost_usd,
        count(*) filter (where cost_source = 'price_table') as estimated_cost_calls,
        count(*) filter (where cost_source = 'unknown') as unknown_cost_calls,
        -- numeric: an exact sum, the same whatever order the rows come in
        coalesce(sum(({{ call_latency_ms() }})::numeric), 0) as llm_latency_ms,
        string_agg(distinct model, ',' order by model) as models,
        string_agg(distinct provider, ',' order by provider) as providers
    from llm_calls
    group by project_id, session_id, ingest_txid
)

select * from per_session
