-- Projects (tenants), renamed: every raw row and mart carries project_id; this gives it a name.
with source as (
    select * from {{ source('bagula', 'projects') }}
),

renamed as (
    select
        project_id,
        name as project_name,
        created_at
    from source
)

select * from renamed
