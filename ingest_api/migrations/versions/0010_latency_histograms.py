"""Latency histograms: percentiles over any range from per-day rows, without the calls.

A percentile over a week of tool calls read every call of the week (a million rows at 250,000
sessions a week: 1.4-2.5 s for the Tool usage dashboard). Daily marts now keep each day's
latencies as a histogram of log-spaced buckets (16 per doubling of 1 + ms), and
``bagula_latency_percentile(histogram, fraction)`` merges any set of them and returns the
nearest-rank percentile, to within 2.2 % of (1 + latency): what Prometheus-style histograms
and DDSketch do, over a few hundred rows instead of a million.

* ``bagula_latency_bucket(ms)``: the bucket of a latency, ``floor(16 * log2(1 + ms))``.
* ``bagula_latency_bucket_value(bucket)``: the bucket's geometric middle, in ms.
* ``bagula_latency_percentile(jsonb, fraction)``: aggregate over histograms
  ``{"bucket": calls, ...}``.

They live in schema public with the other functions; executing them is open to every role
(PostgreSQL's default), which is what the marts' readers need. Their bodies name schema public:
Superset's reader runs with ``search_path = marts``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        create function bagula_latency_bucket(latency_ms double precision) returns integer
            language sql immutable strict parallel safe
            return floor(16 * ln(1 + greatest(latency_ms, 0)) / ln(2))::integer;
        comment on function bagula_latency_bucket(double precision) is
            'Latency histogram bucket of a latency in ms: floor(16 * log2(1 + ms))';

        create function bagula_latency_bucket_value(bucket integer) returns double precision
            language sql immutable strict parallel safe
            return power(2, (bucket + 0.5) / 16.0) - 1;
        comment on function bagula_latency_bucket_value(integer) is
            'The geometric middle of a latency histogram bucket, ms';

        -- State: {fraction, calls in bucket 0, calls in bucket 1, ...}.
        create function bagula_latency_histogram_add(
            state double precision[], histogram jsonb, fraction double precision
        ) returns double precision[]
            language plpgsql immutable parallel safe as $$
        declare
            entry record;
        begin
            if histogram is null then
                return state;
            end if;
            if state is null then
                state := array[fraction];
            end if;
            for entry in select key::integer + 2 as i, value::double precision as calls
                         from jsonb_each_text(histogram) loop
                state[entry.i] := coalesce(state[entry.i], 0) + entry.calls;
            end loop;
            return state;
        end $$;

        create function bagula_latency_histogram_percentile(state double precision[])
            returns double precision
            language plpgsql immutable parallel safe as $$
        declare
            total double precision := 0;
            seen double precision := 0;
            rank double precision;
            i integer;
        begin
            if state is null then
                return null;
            end if;
            for i in 2 .. array_upper(state, 1) loop
                total := total + coalesce(state[i], 0);
            end loop;
            if total = 0 then
                return null;
            end if;
            -- Nearest rank; the epsilon keeps 0.95 * 20 from rounding up to rank 20.
            rank := greatest(1, ceil(state[1] * total - 1e-9));
            for i in 2 .. array_upper(state, 1) loop
                seen := seen + coalesce(state[i], 0);
                if seen >= rank then
                    return public.bagula_latency_bucket_value(i - 2);
                end if;
            end loop;
            return null;
        end $$;

        create aggregate bagula_latency_percentile(jsonb, double precision) (
            sfunc = bagula_latency_histogram_add,
            stype = double precision[],
            finalfunc = bagula_latency_histogram_percentile
        );
        comment on aggregate bagula_latency_percentile(jsonb, double precision) is
            'Nearest-rank percentile (fraction 0..1) of merged latency histograms, ms, within 2.2 % of 1 + ms';
    """)


def downgrade() -> None:
    op.execute("""
        drop aggregate if exists bagula_latency_percentile(jsonb, double precision);
        drop function if exists bagula_latency_histogram_percentile(double precision[]);
        drop function if exists bagula_latency_histogram_add(double precision[], jsonb, double precision);
        drop function if exists bagula_latency_bucket_value(integer);
        drop function if exists bagula_latency_bucket(double precision);
    """)
