{#- Every LLM call's cost and where it came from (docs/otlp.md, "Cost"):
    client       the cost the client sent (costUsd, or the span's gen_ai.usage.cost);
    price_table  none sent: the project's negotiated rate for the provider and model in force
                 when the call started (project_prices, `bagula prices set`), else the
                 maintained price table's estimate made at ingest (llm_calls.estimated_cost_usd);
    unknown      neither knows the model: cost_usd is null, never 0.
    A rate matches a call's provider exactly or '*', its model exactly or by a prefix ending
    in '*'; the most specific one wins (exact provider, exact model, longest prefix), then the
    latest in force. #}
with llm_calls as (
    select * from {{ ref('stg_bagula__llm_calls') }}
),

prices as (
    select * from {{ ref('stg_bagula__project_prices') }}
),

negotiated as (
    select
        llm_calls.*,
        rate.input_per_mtok,
        rate.output_per_mtok,
        rate.cache_read_per_mtok,
        rate.cache_write_per_mtok
    from llm_calls
    left join lateral (
        select prices.*
        from prices
        where prices.project_id = llm_calls.project_id
            and prices.provider in (llm_calls.provider, '*')
            and (prices.model = llm_calls.model
                 or (right(prices.model, 1) = '*' and starts_with(llm_calls.model, left(prices.model, -1))))
            and prices.effective_from <= llm_calls.started_at
        order by
            prices.provider = '*',
            right(prices.model, 1) = '*',
            length(prices.model) desc,
            prices.effective_from desc
        limit 1
    ) as rate on true
),

costed as (
    select
        *,
        -- Cached prompt tokens are part of tokens_input; each part at its own rate.
        -- (counts that contradict each other, more cached than prompt tokens, price nothing)
        case when input_per_mtok is not null and (tokens_input is not null or tokens_output is not null)
                and coalesce(tokens_cache_read, 0) + coalesce(tokens_cache_write, 0) <= coalesce(tokens_input, 0) then
            (
                (coalesce(tokens_input, 0) - coalesce(tokens_cache_read, 0) - coalesce(tokens_cache_write, 0))
                    * input_per_mtok
                + coalesce(tokens_cache_read, 0) * coalesce(cache_read_per_mtok, input_per_mtok)
                + coalesce(tokens_cache_write, 0) * coalesce(cache_write_per_mtok, input_per_mtok)
                + coalesce(tokens_output, 0) * output_per_mtok
            ) / 1000000
        end as negotiated_cost_usd
    from negotiated
),

priced as (
    select
        project_id,
        session_id,
        turn_id,
        call_id,
        call_position,
        provider,
        model,
        started_at,
        ended_at,
        tokens_input,
        tokens_output,
        tokens_total,
        tokens_cache_read,
        tokens_cache_write,
        coalesce(cost_usd, negotiated_cost_usd, estimated_cost_usd) as cost_usd,
        cost_usd as client_cost_usd,
        case when cost_usd is null then coalesce(negotiated_cost_usd, estimated_cost_usd) end as estimated_cost_usd,
        case
            when cost_usd is not null then 'client'
            when negotiated_cost_usd is not null or estimated_cost_usd is not null then 'price_table'
            else 'unknown'
        end as cost_source,
        case
            when cost_usd is not null then null
            when negotiated_cost_usd is not null then 'project_prices'
            else price_source
        end as price_source,
        latency_ms,
        ingest_txid,
        ingested_at
    from costed
)

select * from priced
