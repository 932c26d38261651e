"""Prometheus counters of the OTLP path (served with the API's other metrics)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from prometheus_client import Counter


@dataclass(frozen=True)
class OtlpMetrics:
    spans: Counter
    sessions: Counter


@lru_cache(maxsize=1)
def otlp_metrics() -> OtlpMetrics:
    return OtlpMetrics(
        spans=Counter(
            "bagula_otlp_spans_total",
            "Spans received on /v1/traces, by outcome (stored, duplicate, rejected)",
            ["outcome"],
        ),
        sessions=Counter(
            "bagula_otlp_sessions_total",
            "Sessions assembled from spans, by outcome "
            "(stored, duplicate, rejected, deferred: waiting for a parent span)",
            ["outcome"],
        ),
    )


def count_spans(stored: int, duplicates: int, rejected: int) -> None:
    spans = otlp_metrics().spans
    for outcome, count in (("stored", stored), ("duplicate", duplicates), ("rejected", rejected)):
        if count:
            spans.labels(outcome).inc(count)


def count_sessions(outcome: str, count: int = 1) -> None:
    if count:
        otlp_metrics().sessions.labels(outcome).inc(count)
