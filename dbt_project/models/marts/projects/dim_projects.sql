-- Project names for the dashboards (a filter and tables show names, not ids). A view: a
-- project created by `bagula keys create` has its name here at once, before any build.
select
    project_id,
    project_name,
    created_at
from {{ ref('stg_bagula__projects') }}
