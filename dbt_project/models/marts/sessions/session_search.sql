{#- The full-text search index of sessions (GET /v1/sessions?q=..., the Session explorer's
    Search filter): one row per session with a tsvector of everything said in it, weighted
    by where it was said, and its identifier-like words for trigram (substring) matching.

      A  the initial request, what started each turn (the user's messages), the user's feedback
      B  the LLM responses, the agent's answers, the final result
      C  tool names, arguments, results and errors
      D  the prompts' messages (each distinct message once), metadata, tags, user, agent

    JSON documents contribute their string and number values. Each part is indexed up to its
    first 100,000 characters (a tsvector holds at most 1 MB). Incremental by the ingest
    watermark: a build indexes the sessions it reads, off the ingest path. The GIN index on
    `document` comes with the table; the trigram index on `identifiers` only where the
    pg_trgm extension exists (migration 0005 creates it when it can). The index with the status
    serves a filter by agent and a rare status: without it, a common word's search walked
    the agent's sessions and filtered out most (p95 443 ms at a million sessions). #}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    pre_hook="set local enable_nestloop = off",
    post_hook=[
        "analyze {{ this }}",
        "{{ ensure_index(this, ['project_id', 'agent_name', 'status', 'started_at', 'session_id']) }}",
        "do $$ begin if exists (select 1 from pg_extension where extname = 'pg_trgm') and not exists (select 1 from pg_index where indrelid = '{{ this.schema }}.{{ this.identifier }}'::regclass and pg_get_indexdef(indexrelid) like '%gin_trgm_ops%') then execute format('create index on {{ this.schema }}.{{ this.identifier }} using gin (identifiers %I.gin_trgm_ops)', (select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'pg_trgm')); end if; end $$",
    ],
    unique_key=['project_id', 'session_id'],
    indexes=[
        {'columns': ['watermark']},
        {'columns': ['project_id', 'session_id'], 'unique': true},
        {'columns': ['project_id', 'started_at', 'session_id']},
        {'columns': ['project_id', 'agent_name', 'started_at', 'session_id']},
        {'columns': ['document'], 'type': 'gin'},
    ],
) }}

{%- set window = ingest_window() %}
{%- set part_limit = 100000 %}
{#- The string and number values of a JSON document (DOC), as text. #}
{%- set leaves_of -%}
    (select string_agg(leaf #>> '{}', ' ')
     from jsonb_path_query(DOC, 'strict $.**') as leaf
     where jsonb_typeof(leaf) in ('string', 'number'))
{%- endset %}

with sessions as (
    select * from {{ ref('stg_bagula__agent_sessions') }}
    where {{ in_ingest_window(window) }}
),

turns as (
    select
        project_id,
        session_id,
        ingest_txid,
        -- what the user said: the turn's trigger (its content when it has one) and feedback
        jsonb_agg(jsonb_build_array(coalesce(trigger -> 'content', trigger), user_feedback) order by turn_number)
            as triggers,
        jsonb_agg(agent_message order by turn_number) filter (where agent_message is not null) as answers
    from {{ ref('stg_bagula__session_turns') }}
    where {{ in_ingest_window(window) }}
    group by project_id, session_id, ingest_txid
),

llm_messages as (
    select * from {{ ref('stg_bagula__llm_call_messages') }}
    where {{ in_ingest_window(window) }}
),

responses as (
    select
        project_id,
        session_id,
        ingest_txid,
        jsonb_agg(response) filter (where response is not null) as responses
    from llm_messages
    group by project_id, session_id, ingest_txid
),

prompts as (
    -- every prompt repeats the conversation so far: each distinct message once
    select
        project_id,
        session_id,
        ingest_txid,
        jsonb_agg(distinct message) as prompts
    from llm_messages
    cross join lateral jsonb_array_elements(
        case jsonb_typeof(messages) when 'array' then messages else jsonb_build_array(messages) end
    ) as message
    where messages is not null
    group by project_id, session_id, ingest_txid
),

tools as (
    select
        project_id,
        session_id,
        ingest_txid,
        string_agg(tool_name, ' ' order by started_at, call_position) as tool_names,
        jsonb_agg(arguments order by started_at, call_position) filter (where arguments is not null) as arguments,
        jsonb_agg(result order by started_at, call_position) filter (where result is not null) as results,
        string_agg(error, ' ' order by started_at, call_position) as errors
    from {{ ref('stg_bagula__tool_calls') }}
    where {{ in_ingest_window(window) }}
    group by project_id, session_id, ingest_txid
),

parts as (
    select
        sessions.project_id,
        sessions.session_id,
        sessions.agent_name,
        sessions.user_id,
        sessions.status,
        sessions.started_at,
        sessions.tags,
        concat_ws(' ', sessions.initial_request, {{ leaves_of | replace('DOC', 'turns.triggers') }}) as part_a,
        concat_ws(' ', {{ leaves_of | replace('DOC', 'responses.responses') }}, {{ leaves_of | replace('DOC', 'turns.answers') }},
                  {{ leaves_of | replace('DOC', 'sessions.final_result') }}) as part_b,
        concat_ws(' ', tools.tool_names, {{ leaves_of | replace('DOC', 'tools.arguments') }}, {{ leaves_of | replace('DOC', 'tools.results') }},
                  tools.errors) as part_c,
        concat_ws(' ', {{ leaves_of | replace('DOC', 'prompts.prompts') }}, {{ leaves_of | replace('DOC', 'sessions.metadata') }},
                  array_to_string(sessions.tags, ' '), sessions.user_id, sessions.agent_name) as part_d
    from sessions
    left join turns
        on turns.project_id = sessions.project_id
        and turns.session_id = sessions.session_id
        and turns.ingest_txid = sessions.ingest_txid
    left join responses
        on responses.project_id = sessions.project_id
        and responses.session_id = sessions.session_id
        and responses.ingest_txid = sessions.ingest_txid
    left join prompts
        on prompts.project_id = sessions.project_id
        and prompts.session_id = sessions.session_id
        and prompts.ingest_txid = sessions.ingest_txid
    left join tools
        on tools.project_id = sessions.project_id
        and tools.session_id = sessions.session_id
        and tools.ingest_txid = sessions.ingest_txid
),

documents as (
    select
        project_id,
        session_id,
        agent_name,
        user_id,
        status,
        started_at,
        tags,
        setweight(to_tsvector('english', left(part_a, {{ part_limit }})), 'A')
            || setweight(to_tsvector('english', left(part_b, {{ part_limit }})), 'B')
            || setweight(to_tsvector('english', left(part_c, {{ part_limit }})), 'C')
            || setweight(to_tsvector('english', left(part_d, {{ part_limit }})), 'D') as document
    from parts
)

select
    project_id,
    session_id,
    agent_name,
    user_id,
    status,
    started_at,
    tags,
    document,
    -- words with a digit or an identifier's punctuation (order numbers, codes, ids, paths):
    -- what a substring search (trigram) is for; whole words are found through `document`
    array_to_string(array(
        select lexeme from unnest(document) where lexeme ~ '[0-9@/_.:#-]' order by lexeme
    ), ' ') as identifiers,
    {{ window.upper }}::bigint as watermark
from documents
