{#
  delete+insert as dbt's, with the planner's default for nested loops restored first. The fact
  models turn nested loops off for their own query (pre_hook `set local enable_nestloop = off`:
  the planner misestimates the rows of new ingest txids and chose nested loops over whole
  batches). The setting lasts the transaction, and without nested loops the delete of a
  batch's keys hash-joins with a scan of the whole mart, which grows with history; with them,
  it looks each key up in the mart's index.
#}
{% macro postgres__get_delete_insert_merge_sql(target, source, unique_key, dest_columns, incremental_predicates) -%}
    reset enable_nestloop;
    {{ default__get_delete_insert_merge_sql(target, source, unique_key, dest_columns, incremental_predicates) }}
{%- endmacro %}
