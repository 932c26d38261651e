{#
  An index an incremental model gained after its table was created: dbt creates a model's
  `indexes` only with the table, so tables built by earlier versions would never get it. As a
  post-hook, this creates it when the table has no index on exactly these columns; by its
  definition, not by name, because a full refresh renames the old table (and its indexes)
  aside before dropping it.
#}
{% macro ensure_index(relation, columns, include=[]) -%}
    {%- set column_list = columns | join(', ') -%}
    {%- set definition = column_list ~ ((') INCLUDE (' ~ (include | join(', '))) if include else '') -%}
    do $$ begin
        if not exists (
            select 1 from pg_index
            where indrelid = '{{ relation.schema }}.{{ relation.identifier }}'::regclass
            and pg_get_indexdef(indexrelid) like '% USING btree ({{ definition }})'
        ) then
            create index on {{ relation }} ({{ definition }});
        end if;
    end $$
{%- endmacro %}

{#
  Autovacuum of an append-only table by its own share of new rows: the default (20 % of the
  table) leaves the newest rows of a large mart out of the visibility map for hours, and an
  index-only scan then reads the table for each of them. Set once; no lock when already set.
#}
{% macro vacuum_after_inserts(relation, scale_factor) -%}
    do $$ begin
        if not exists (
            select 1 from pg_class
            where oid = '{{ relation.schema }}.{{ relation.identifier }}'::regclass
            and 'autovacuum_vacuum_insert_scale_factor={{ scale_factor }}' = any(coalesce(reloptions, '{}'))
        ) then
            alter table {{ relation }} set (autovacuum_vacuum_insert_scale_factor = {{ scale_factor }});
        end if;
    end $$
{%- endmacro %}

{#
  The other way: an index a model no longer declares, dropped from tables built with it
  (the same columns, not unique), e.g. (project_id, session_id) beside (session_id), which
  serves the same lookups.
#}
{% macro drop_index(relation, columns) -%}
    {%- set column_list = columns | join(', ') -%}
    do $$ declare index_name text; begin
        for index_name in
            select format('%I.%I', '{{ relation.schema }}', c.relname)
            from pg_index i join pg_class c on c.oid = i.indexrelid
            where i.indrelid = '{{ relation.schema }}.{{ relation.identifier }}'::regclass
            and not i.indisunique
            and pg_get_indexdef(i.indexrelid) like '% USING btree ({{ column_list }})'
        loop
            execute 'drop index ' || index_name;
        end loop;
    end $$
{%- endmacro %}
