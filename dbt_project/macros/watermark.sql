{#
  The ingest watermark (docs/architecture.md, "The watermark"), as dbt reads it.

  Raw rows carry ingest_txid, the id of the transaction that wrote them; the watermark
  is a transaction id below which every transaction has finished (bagula_watermark(),
  the oldest one still running). A fact model reads raw rows with
  lower <= ingest_txid < upper and stamps what it writes with watermark = upper; next
  run, lower is the largest stamp in the model. So a batch that committed late is never
  skipped and nothing is read twice. upper is one value for every model of a run: the
  variable `watermark` when the caller passes one; else the setting bagula.build_watermark,
  which the platform's runs give every connection of the invocation (PGOPTIONS), because a
  changed variable makes dbt re-parse the whole project, seconds on every run; else the
  database's current watermark.

  Both bounds are rendered as literals so PostgreSQL can use the BRIN indexes on
  ingest_txid and push the bounds into grouped views.
#}
{% macro ingest_window() %}
    {%- set lower = 0 -%}
    {%- set upper = var('watermark') -%}
    {%- if execute -%}
        {%- if is_incremental() -%}
            {%- set lower = run_query('select coalesce(max(watermark), 0) from ' ~ this).columns[0].values()[0] -%}
        {%- endif -%}
        {%- if upper is none -%}
            {%- set upper = run_query(
                "select coalesce(nullif(current_setting('bagula.build_watermark', true), '')::bigint,"
                ~ " bagula_watermark())").columns[0].values()[0] -%}
        {%- endif -%}
    {%- endif -%}
    {{ return({'lower': lower | int, 'upper': (upper if upper is not none else 0) | int}) }}
{% endmacro %}

{% macro in_ingest_window(window, column='ingest_txid') -%}
    {{ column }} >= {{ window.lower }} and {{ column }} < {{ window.upper }}
{%- endmacro %}

{#
  Aggregates recompute whole buckets: the buckets touched by fact rows newer than
  the aggregate's own watermark (all of them on a full refresh). A literal, so the
  planner sees how few rows are new; in unit tests, where {{ this }} is a fixture
  (a CTE name, not a relation), a scalar subquery over that fixture.
#}
{% macro aggregate_watermark() -%}
    {%- if not is_incremental() -%}
        -1
    {%- elif this is string -%}
        (select coalesce(max(watermark), -1) from {{ this }})
    {%- elif execute -%}
        {{ run_query('select coalesce(max(watermark), -1) from ' ~ this).columns[0].values()[0] | int }}
    {%- else -%}
        -1
    {%- endif -%}
{%- endmacro %}

{# Interpolated percentile, rounded to the microsecond. #}
{% macro percentile(fraction, column) -%}
    round((percentile_cont({{ fraction }}) within group (order by {{ column }}))::numeric, 3)::double precision
{%- endmacro %}

{# A call's latency: as reported, else from its start and end. #}
{% macro call_latency_ms(alias=none) -%}
    {%- set p = (alias ~ '.') if alias else '' -%}
    coalesce({{ p }}latency_ms, extract(epoch from {{ p }}ended_at - {{ p }}started_at) * 1000)
{%- endmacro %}

{# The UTC hour or day a timestamp falls in, as timestamptz (independent of the session time zone). #}
{% macro utc_bucket(unit, column) -%}
    (date_trunc('{{ unit }}', {{ column }} at time zone 'utc') at time zone 'utc')
{%- endmacro %}

{#
  (project_id, agent_name, bucket_start, bucket_end) of every bucket that holds a
  session newer than the aggregate's watermark: late sessions re-open old buckets.
#}
{% macro touched_buckets(unit) -%}
    select distinct
        project_id,
        agent_name,
        {{ utc_bucket(unit, 'started_at') }} as bucket_start,
        {{ utc_bucket(unit, 'started_at') }} + interval '1 {{ unit }}' as bucket_end
    from {{ ref('fct_sessions') }}
    where watermark > {{ aggregate_watermark() }}
{%- endmacro %}

{#
  Rows of a fact model that fall in the touched buckets (by their session's start).
  A LATERAL subquery behind OFFSET 0 (a planning fence): one range scan of the
  (project_id, agent_name, time) index per touched bucket, so the work follows the
  rows in those buckets, whether that is one hour or the whole history. Unfenced,
  the planner flattens it into a join that compares every row with every bucket.
#}
{% macro rows_in_buckets(model, time_column) -%}
    select facts.*, touched.bucket_start
    from touched
    cross join lateral (
        select *
        from (select * from {{ model }}) as candidates
        where candidates.project_id = touched.project_id
            and candidates.agent_name = touched.agent_name
            and candidates.{{ time_column }} >= touched.bucket_start
            and candidates.{{ time_column }} < touched.bucket_end
        offset 0
    ) as facts
{%- endmacro %}
