"""An IsolationForest per agent: sessions unlike the agent's recent ones, whatever the cause.

The rules and failure-mode detectors each look at one signal; the forest looks at all
of a session's figures together (cost, tokens and active latency per LLM call, turns,
tool calls, tool errors, satisfaction; sizes on a log scale, missing satisfaction as
the training median). Cost, tokens and latency are taken per LLM call because their
session totals grow with the number of turns, and axis-aligned isolation splits
cannot see "expensive for its length": per call, a 6x prompt stands out at once) and flags combinations the agent's last 7 days did not produce. It is trained
once per agent and day on the sessions before that day, with a fixed random state on
rows in a fixed order, so the same history gives the same model, and its ``version``
(a hash of the parameters and the training matrix) ties each verdict to the model
that gave it.

Thresholds are the forest's own scores on its training sessions (score = the
negated ``score_samples``, about 0.5 for ordinary sessions, towards 1 for isolated
ones): minor above 99.9% of the training sessions, major 0.03 beyond the most
isolated of them, and critical only far beyond it (+0.08, and at least 0.75),
which a healthy agent's ordinary variation does not reach.

What a forest can and cannot see: it isolates unusual *combinations* within the
ranges it was trained on (a short session with many tool errors and a poor rating).
A value beyond the training range takes the same path as the most extreme training
value, so a single figure far out of range (a 6x prompt) scores no higher than the
agent's own extremes; those are the rules' job (``ml.anomaly``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from sklearn.ensemble import IsolationForest

from ml.features import derive, iso, to_json
from ml.verdicts import ISOLATION_FOREST, anomalies, capitalized, no_anomalies

FEATURES: list[str] = ["log_cost_per_call", "log_tokens_per_call", "log_latency_per_call", "turn_count",
                       "tool_call_count", "tool_error_count", "user_satisfaction"]
TRAINING_WINDOW = timedelta(days=7)
MIN_TRAINING = 50
# 256 samples per tree (the method's usual size) keeps a stored model small (~0.2 MB).
PARAMS: dict[str, Any] = {"n_estimators": 100, "max_samples": 256, "random_state": 0, "contamination": "auto"}
MINOR_QUANTILE = 0.999
MAJOR_MARGIN = 0.03
CRITICAL_MARGIN = 0.08
CRITICAL_FLOOR = 0.75

LABELS = {"log_cost_per_call": "cost per call", "log_tokens_per_call": "tokens per call",
          "log_latency_per_call": "active time per call",
          "turn_count": "turns", "tool_call_count": "tool calls", "tool_error_count": "tool errors",
          "user_satisfaction": "satisfaction"}


@dataclass
class TrainedForest:
    model: IsolationForest
    version: str
    features: list[str]
    params: dict[str, Any]
    trained_rows: int
    trained_from: datetime
    trained_until: datetime
    agent_name: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)  # minor / major / critical score
    fill_values: dict[str, float] = field(default_factory=dict)  # for missing feature values
    centers: dict[str, float] = field(default_factory=dict)  # training medians, for explanations
    scales: dict[str, float] = field(default_factory=dict)  # training robust spreads


def _matrix(sessions: pl.DataFrame, fill: dict[str, float] | None = None) -> tuple[pl.DataFrame, np.ndarray]:
    f = derive(sessions).sort("started_at", "session_id")
    calls = pl.col("llm_call_count").clip(1, None).cast(pl.Float64)
    f = f.with_columns(
        (pl.col("total_cost_usd") * 1_000_000 / calls).log1p().alias("log_cost_per_call"),
        (pl.col("tokens_total").cast(pl.Float64) / calls).log1p().alias("log_tokens_per_call"),
        (pl.col("active_ms") / calls).log1p().alias("log_latency_per_call"),
    )
    columns = []
    for name in FEATURES:
        column = pl.col(name).cast(pl.Float64)
        if fill is not None:
            column = column.fill_null(fill.get(name, 0.0)).fill_nan(fill.get(name, 0.0))
        columns.append(column.alias(name))
    return f, f.select(columns).to_numpy()


def train(history: pl.DataFrame, *, agent_name: str, day_start: datetime) -> TrainedForest | None:
    """The forest of ``agent_name`` from its sessions in the 7 days before ``day_start``,
    or None when there are fewer than 50 of them."""
    rows = history.filter((pl.col("agent_name") == agent_name) & (pl.col("started_at") < day_start)
                          & (pl.col("started_at") >= day_start - TRAINING_WINDOW))
    if rows.height < MIN_TRAINING:
        return None
    f, raw = _matrix(rows)
    fill = {}
    for i, name in enumerate(FEATURES):
        values = raw[:, i][~np.isnan(raw[:, i])]
        fill[name] = float(np.median(values)) if len(values) else 0.0
    _, x = _matrix(rows, fill)
    params = {**PARAMS, "max_samples": min(PARAMS["max_samples"], len(x))}
    model = IsolationForest(**params, n_jobs=1).fit(x)
    scores = -model.score_samples(x)
    top = float(scores.max())
    thresholds = {"minor": float(np.quantile(scores, MINOR_QUANTILE)), "major": top + MAJOR_MARGIN,
                  "critical": max(top + CRITICAL_MARGIN, CRITICAL_FLOOR)}
    centers, scales = {}, {}
    for i, name in enumerate(FEATURES):
        q25, q50, q75 = np.quantile(x[:, i], [0.25, 0.5, 0.75])
        centers[name] = float(q50)
        scales[name] = float(max((q75 - q25) / 1.349, np.std(x[:, i]) * 0.5, 1e-3))
    digest = hashlib.sha256()
    digest.update(json.dumps({"params": params, "features": FEATURES, "agent": agent_name,
                              "fill": fill}, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    started = f.get_column("started_at")
    return TrainedForest(model=model, version="iforest-" + digest.hexdigest()[:16], features=list(FEATURES),
                         params=params, trained_rows=len(x), trained_from=started.min(), trained_until=started.max(),
                         agent_name=agent_name, thresholds=thresholds, fill_values=fill, centers=centers,
                         scales=scales)


def score(forest: TrainedForest, sessions: pl.DataFrame) -> pl.DataFrame:
    """Verdicts ("isolation_forest") for the anomalous ones among ``sessions``."""
    if sessions.is_empty():
        return no_anomalies()
    f, x = _matrix(sessions, forest.fill_values)
    scores = -forest.model.score_samples(x)
    t = forest.thresholds
    out = []
    raw_cost = f.get_column("total_cost_usd").to_list()
    for i in np.nonzero(scores >= t["minor"])[0]:
        s = float(scores[i])
        severity = "critical" if s >= t["critical"] else "major" if s >= t["major"] else "minor"
        deviations = {name: (x[i, k] - forest.centers[name]) / forest.scales[name]
                      for k, name in enumerate(forest.features)}
        top = sorted(deviations, key=lambda n: (-abs(deviations[n]), n))[:3]
        parts = [_describe(name, x[i, forest.features.index(name)], forest.centers[name], raw_cost[i])
                 for name in top if abs(deviations[name]) >= 1.0]
        text = (f"isolation forest score {s:.3f}: this combination of figures is more isolated than "
                + ("any" if s > t["major"] - MAJOR_MARGIN else "99.9%")
                + f" of the agent's {forest.trained_rows} sessions of the 7 days before")
        if parts:
            text += "; most unusual: " + ", ".join(parts)
        out.append({
            "session_id": f.get_column("session_id")[int(i)], "agent_name": f.get_column("agent_name")[int(i)],
            "anomaly_type": ISOLATION_FOREST, "severity": severity, "score": round(s, 6),
            "explanation": capitalized(text),
            "details": to_json({"score": s, "thresholds": t, "model_version": forest.version,
                                "features": {n: _natural(n, x[i, k]) for k, n in enumerate(forest.features)},
                                "deviations_sigma": deviations, "trained_rows": forest.trained_rows,
                                "trained_from": iso(forest.trained_from), "trained_until": iso(forest.trained_until)}),
            "model_version": forest.version,
        })
    return anomalies(out)


def _natural(name: str, value: float) -> float:
    """A feature value back in its own unit (dollars, tokens, ms)."""
    if name == "log_cost_per_call":
        return math.expm1(value) / 1_000_000
    if name in ("log_tokens_per_call", "log_latency_per_call"):
        return math.expm1(value)
    return float(value)


def _describe(name: str, value: float, center: float, cost: float | None) -> str:
    observed, usual = _natural(name, value), _natural(name, center)
    if name == "log_cost_per_call":
        return f"cost per LLM call ${observed:.4f} (median ${usual:.4f})"
    if name == "log_latency_per_call":
        return f"active time per LLM call {observed / 1000:.1f} s (median {usual / 1000:.1f} s)"
    if name == "log_tokens_per_call":
        return f"tokens per LLM call {observed:,.0f} (median {usual:,.0f})"
    return f"{LABELS[name]} {observed:g} (median {usual:g})"
