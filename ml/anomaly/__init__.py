"""Anomalies: each session of a day against its own agent's history (and baseline).

Every threshold is relative to the agent itself. "History" is the agent's sessions
that started in the 7 days strictly before the judged one (polars rolling windows
closed on the left, or sorted-array counts), so a verdict never depends on later
sessions or on the clock, and re-running a day gives the same verdicts. Where a
fault persists for days it soon dominates the trailing history and would pass for
normal, so the persistent failure modes compare with the agent's baseline when one
is given whose sessions all precede the judged one, and with the trailing history
otherwise. Costs and latencies are judged per LLM call (see ``ml.features``) as
logs, with robust statistics: median, and sigma = interquartile range / 1.349.

One cause per expensive session: a session whose context grew (``context_rot``)
is not also a ``cost_spike``, and one that sits at its agent's crept-up recent
level is ``cost_creep``, not a spike, unless it is 1.5x above even that level.

Rules of the seed, made robust:

* ``cost_spike``: cost per LLM call above the trailing 7-day centre + 3 sigma and
  at least 1.5x it. Major from 2x and 4.5 sigma, critical from 3x and 6 sigma
  (a healthy agent's cost per call stays within ~1.5x of its median).
* ``latency_spike``: active time (LLM + tool wall time, not the user's think time
  between turns) per LLM call above 2x the trailing 7-day mean and 3.5 sigma; or
  1.75x while the agent's sessions of the 2 h before (at least 5) ran at >= 1.75x
  too, a median 3 standard errors above the usual. One slow call is within a healthy agent's noise (LLM latency has a long
  lognormal tail), so major needs that sustained slowness or 5 sigma, and critical
  needs it at >= 2x while this session is >= 2.5x.
* ``tool_usage_change``: a tool that >= 80% of the trailing sessions (or of the
  baseline) called was not called. Major when it was called >= 95% of the time.

Failure modes:

* ``skill_bloat``: the session calls tools that are new to the agent (absent from
  the baseline, or first used less than 2 days ago after days without them) *and*
  tool use degrades: its tool errors are improbable at the agent's usual error
  rate (binomial tail < 1%) or it makes >= 1.5x the usual tool calls per turn.
  Major with a tail < 1e-3 or the extra calls; critical with both symptoms.
* ``context_rot``: more turns than the agent's 99th percentile *and* a largest
  prompt (context) > 1.15x its 99th percentile; major when quality fell too
  (failed, or satisfaction below the usual for successes).
* ``confident_hallucination``: reported success with confidence at or above the
  agent's median for successes, while the user rated it like a failed session
  (within half a point of the failures' mean rating, from at least 10 rated) and
  at least 2 points below the agent's median rating of a success. Major when the
  confidence is in the top decile of the agent's successes.
* ``sequential_tax``: an agent that overlaps its tools (median parallelism >=
  1.15) ran them one after another: parallelism below a third of the way from 1 to
  its 1st percentile, with its usual tool set (a dropped tool is
  ``tool_usage_change``). Major when the lost overlap is >= 10% of the session's
  active time.
* ``cost_creep``: a slow rise, judged on the agent's level rather than one session.
  Each session's cost per call is compared with sessions of the same number of
  LLM calls (baseline, else trailing 7 days), as later calls carry more context;
  the median of that gap over the last 6 h must be >= +10% at 4 standard errors,
  and its least-squares trend over 24 h rising by >= 5%/day at 3 standard errors
  but slower than doubling a day, with residuals around that trend no wider than 3x
  the agent's usual variance of the gap (a jump is a spike or a step, not a creep). The
  session itself costs at least its reference and is near the recent level.
  Major at +30%, critical when the level has doubled.
* ``cascade_failure``: the session failed after one of its child sessions failed,
  and cascades through that child agent are improbable at their usual rate (the
  child agent's baseline failure rate, else the trailing rate of such cascades)
  given how many of the agent's sessions of the 6 h before cascaded through it,
  plus this one: binomial tail < 1% (minor), < 1e-3 (major), < 1e-6 (critical).
  The failed child gets the same verdict: its failure is what propagated. The
  only verdict that looks at sessions started after the judged one: its own
  children (and, for a child, its parent, which started before it).
* ``model_change``: a model answered that the baseline never used, or that the
  agent first used less than 3 days ago after days without it. Major when the
  session also behaves differently: output tokens per call >= 1.3x (or <= 0.77x)
  the usual, a failure where the agent usually succeeds, or more turns than usual.

Window shifts (``windows``):

* ``tool_share_shift``: a tool that 15-80% of the agent's sessions called is called by
  at most half that share (or at least twice it, +20 points) over its last 16-128
  sessions, at a binomial tail below 1e-5; major from a 35-point move.

The IsolationForest (``ml.forest``) is trained and scored separately, per agent.

Modules: ``history`` (the trailing statistics, baselines and name histories every
detector compares with), ``rules`` (the seed's three), ``failure_modes`` (the seven),
``windows`` (shifts over an agent's latest sessions);
``detect`` below runs them all for a day. Verdict types and severities: ``ml.verdicts``.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from ml.anomaly.failure_modes import (
    MODEL_NOVELTY,
    TOOL_NOVELTY,
    arbitrate_cost,
    cascade_failure,
    confident_hallucination,
    context_rot,
    cost_creep,
    model_change,
    sequential_tax,
    skill_bloat,
)
from ml.anomaly.history import HISTORY, ItemHistory, attach_baselines, creep_inputs, trailing
from ml.anomaly.rules import cost_spike, latency_spike, missing_tools, tool_usage_change
from ml.anomaly.windows import tool_share_shift
from ml.features import derive, micros
from ml.verdicts import no_anomalies

__all__ = ["HISTORY", "detect"]


def detect(frame: pl.DataFrame, *, day_start: datetime, day_end: datetime,
           baselines: dict[str, dict]) -> pl.DataFrame:
    """Verdicts for the sessions of ``frame`` with day_start <= started_at < day_end."""
    f = derive(frame).sort("agent_name", "started_at", "session_id")
    if f.is_empty():
        return no_anomalies()
    origin = micros(day_start)
    f = f.with_columns(
        ((pl.col("started_at").dt.epoch("us") - origin) / 86_400_000_000).alias("t_days"),
        ((pl.col("started_at") >= day_start) & (pl.col("started_at") < day_end)).alias("judged"),
    )
    f = trailing(f)
    f = attach_baselines(f, baselines or {})
    f = creep_inputs(f, baselines or {})
    judged = f.filter(pl.col("judged"))
    if judged.is_empty():
        return no_anomalies()
    items = ItemHistory(f, judged)
    tools = items.table("tools", novelty=TOOL_NOVELTY)
    models = items.table("model_list", novelty=MODEL_NOVELTY)
    missing = missing_tools(judged, tools, baselines or {})
    spikes, creep, rot = arbitrate_cost(judged, cost_spike(judged), cost_creep(judged),
                                        context_rot(judged))
    parts = [
        spikes,
        latency_spike(judged),
        tool_usage_change(judged, missing),
        skill_bloat(judged, tools, baselines or {}),
        rot,
        confident_hallucination(judged),
        sequential_tax(judged, missing),
        creep,
        cascade_failure(f, judged, baselines or {}),
        model_change(judged, models, baselines or {}),
        tool_share_shift(f, judged, baselines or {}),
    ]
    found = [p for p in parts if p is not None and not p.is_empty()]
    if not found:
        return no_anomalies()
    return pl.concat(found, how="vertical").sort("anomaly_type", "session_id")
