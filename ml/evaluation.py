"""Precision and recall of the detectors against the simulator's ground truth.

A session counts once per type however many verdicts of that type it has. Only
sessions that were judged count, on both sides: a fault injected into a session
outside the judged range can be neither found nor missed. Precision is
true positives / sessions detected with the type, recall true positives /
sessions injected with it; either is null when its denominator is zero.
"""

from __future__ import annotations

import polars as pl

OUTPUT_SCHEMA = {"anomaly_type": pl.Utf8, "injected": pl.Int64, "detected": pl.Int64, "true_positives": pl.Int64,
                 "precision": pl.Float64, "recall": pl.Float64}


def precision_recall(verdicts: pl.DataFrame, truth: pl.DataFrame, *, sessions: pl.DataFrame) -> pl.DataFrame:
    """Per type: injected, detected, true_positives, precision, recall.

    ``verdicts``: session_id, anomaly_type; ``truth``: session_id, fault_type (the
    simulator's ground truth, sessionId/faultType renamed); ``sessions``: the judged
    sessions (a session_id column)."""
    judged = sessions.select(pl.col("session_id").cast(pl.Utf8)).unique()
    found = (verdicts.select(pl.col("session_id").cast(pl.Utf8), pl.col("anomaly_type").cast(pl.Utf8))
             .join(judged, on="session_id", how="semi").unique())
    injected = (truth.select(pl.col("session_id").cast(pl.Utf8), pl.col("fault_type").cast(pl.Utf8)
                             .alias("anomaly_type"))
                .join(judged, on="session_id", how="semi").unique())
    hits = found.join(injected, on=["session_id", "anomaly_type"], how="semi")
    types = pl.concat([found.select("anomaly_type"), injected.select("anomaly_type")]).unique()
    count = lambda frame, name: frame.group_by("anomaly_type").agg(pl.len().cast(pl.Int64).alias(name))  # noqa: E731
    table = (types.join(count(injected, "injected"), on="anomaly_type", how="left")
             .join(count(found, "detected"), on="anomaly_type", how="left")
             .join(count(hits, "true_positives"), on="anomaly_type", how="left")
             .with_columns(pl.col("injected", "detected", "true_positives").fill_null(0)))
    return (table.with_columns(
        pl.when(pl.col("detected") > 0).then(pl.col("true_positives") / pl.col("detected")).alias("precision"),
        pl.when(pl.col("injected") > 0).then(pl.col("true_positives") / pl.col("injected")).alias("recall"),
    ).select(list(OUTPUT_SCHEMA)).cast(OUTPUT_SCHEMA).sort("anomaly_type"))
