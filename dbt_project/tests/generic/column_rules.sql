{#- The columns of a model that must not be null, and those that must not be negative, checked
    in one scan and one test (a test per column costs dbt about as much as the scan itself, on
    every build). A failure names each column that breaks its rule and how many rows do. -#}
{% test column_rules(model, not_null=[], non_negative=[]) %}
with counts as (
    select
        {%- for column in not_null %}
        count(*) filter (where {{ column }} is null) as not_null__{{ loop.index }},
        {%- endfor %}
        {%- for column in non_negative %}
        count(*) filter (where {{ column }} < 0) as non_negative__{{ loop.index }},
        {%- endfor %}
        count(*) as checked_rows
    from {{ model }}
)
select broken.column_name, broken.rule, broken.failing_rows
from counts
cross join lateral (
    values
    {%- for column in not_null %}
        ('{{ column }}', 'not_null', not_null__{{ loop.index }}){{ "," if not loop.last or non_negative }}
    {%- endfor %}
    {%- for column in non_negative %}
        ('{{ column }}', 'non_negative', non_negative__{{ loop.index }}){{ "," if not loop.last }}
    {%- endfor %}
) as broken (column_name, rule, failing_rows)
where broken.failing_rows > 0
{% endtest %}
