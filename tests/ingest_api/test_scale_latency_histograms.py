"""Latency percentiles from per-day histograms (migration 0010): whatever the latencies and
however they are split into histograms, merging them gives the nearest-rank percentile of all
of them, to within one bucket: a factor 2^(1/32) (2.2 %) on 1 + ms."""

from __future__ import annotations

import math
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_api import db

BUCKET_HALF_WIDTH = 2 ** (1 / 32)

PERCENTILE_OF_SPLIT = """
    with calls as (
        select * from unnest(%(latencies)s::double precision[], %(days)s::integer[]) as c(latency_ms, day)
    ),
    buckets as (
        select day, bagula_latency_bucket(latency_ms) as bucket, count(*) as calls
        from calls group by day, bucket
    ),
    histograms as (
        select day, jsonb_object_agg(bucket, calls) as histogram from buckets group by day
    )
    select bagula_latency_percentile(histogram, %(fraction)s) from histograms
"""


@pytest.fixture(scope="module")
def conn(pg):
    url = pg.create_database(f"histograms_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered) - 1e-9)) - 1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    calls=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 600_000).map(float), st.floats(0, 3_600_000, allow_nan=False)),
            st.integers(0, 6),
        ),
        min_size=1,
        max_size=300,
    ),
    fraction=st.sampled_from([0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 1.0]),
)
def test_merged_histograms_give_the_nearest_rank_percentile_within_one_bucket(conn, calls, fraction):
    latencies = [latency for latency, _ in calls]
    (found,) = conn.execute(
        PERCENTILE_OF_SPLIT, {"latencies": latencies, "days": [day for _, day in calls], "fraction": fraction}
    ).fetchone()
    expected = nearest_rank(latencies, fraction)
    assert 1 / BUCKET_HALF_WIDTH <= (1 + found) / (1 + expected) <= BUCKET_HALF_WIDTH, (found, expected)


def test_no_histograms_and_empty_ones_have_no_percentile(conn):
    assert conn.execute("select bagula_latency_percentile(h, 0.95) from (select null::jsonb) as t(h)").fetchone() == (
        None,
    )
    assert conn.execute("select bagula_latency_percentile(h, 0.95) from (select '{}'::jsonb) as t(h)").fetchone() == (
        None,
    )
    assert conn.execute("select bagula_latency_percentile(h, 0.5) from (select null::jsonb where false) as t(h)").fetchone() == (
        None,
    )
