with source as (
    select * from {{ source('bagula', 'project_prices') }}
),

renamed as (
    select
        project_id,
        provider,
        model,
        effective_from,
        input_per_mtok,
        output_per_mtok,
        cache_read_per_mtok,
        cache_write_per_mtok,
        note,
        created_at
    from source
)

select * from renamed
