"""Window-level detectors: shifts that no single session shows but a run of sessions does.

``tool_share_shift``: a tool that a steady share of the agent's sessions called (15% to 80%
of them; commoner tools are ``tool_usage_change``'s, judged per session) is called by a
clearly different share of its latest sessions. No single session is unusual (most of
them never called the tool anyway), but 40 sessions in a row without a tool that a
quarter of them used to call is a 1-in-30,000 run.

For each judged session, the window is the agent's last W sessions up to and including
it (W = 16, 32, 64 and 128, so a tool that vanishes is seen after a few dozen sessions
and a partial drop once enough sessions make it clear); the reference share is the
agent's baseline's when usable, else the share in its 7 days of sessions before the
window (at least 100 of them). The window is shifted when the binomial probability of
so few (or so many) calls at the reference share is below 1e-5 (one-sided; the tests of
consecutive sessions overlap, so a healthy agent with a handful of tools and windows
makes well under one false verdict a week) *and* the share at least halved (or at
least doubled, by 20 points or more). The most significant window names the shift.
Major when the share moved by 35 points or more; never critical: a change of habit,
not an outage.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.stats import binom

from ml.anomaly.history import HISTORY
from ml.anomaly.rules import COMMON_TOOL
from ml.features import pct, to_json
from ml.verdicts import TOOL_SHARE_SHIFT, anomalies, capitalized, no_anomalies

WINDOWS = (16, 32, 64, 128)
MIN_SHARE = 0.15  # tools called by fewer sessions are too rare to judge a window by
MIN_RISING_SHARE = 0.05  # a rise is judged from this share (a new tool is skill_bloat's)
MIN_REFERENCE = 100  # trailing sessions before the window, without a baseline
SHIFT_TAIL = 1e-5
DROP_RATIO = 0.5  # the window's share is at most half the reference ...
RISE_RATIO = 2.0  # ... or at least twice it,
RISE_POINTS = 0.20  # and at least 20 points above it
MAJOR_POINTS = 0.35


def tool_share_shift(f: pl.DataFrame, j: pl.DataFrame, baselines: dict[str, dict]) -> pl.DataFrame:
    """Verdicts for the judged sessions (``j``) whose agent's latest sessions (from ``f``,
    the whole frame, sorted by agent and start) call a tool at a clearly shifted share."""
    out = []
    judged_ids = set(j.get_column("session_id").to_list())
    usable = dict(zip(j.get_column("session_id").to_list(), j.get_column("b_usable").to_list(), strict=True))
    history_us = int(HISTORY.total_seconds() * 1_000_000)
    for (agent,), g in f.select("agent_name", "session_id", "started_at", "tools").group_by(
            "agent_name", maintain_order=True):
        ids = g.get_column("session_id").to_list()
        targets = np.array([i for i, sid in enumerate(ids) if sid in judged_ids], dtype=np.int64)
        if targets.size == 0:
            continue
        t = g.get_column("started_at").dt.epoch("us").to_numpy()
        tool_lists = g.get_column("tools").to_list()
        baseline = (baselines.get(agent) or {}).get("tool_frequency") or {}
        has_baseline = np.array([bool(usable[ids[i]]) and bool(baseline) for i in targets])
        best = _best_shift(t, tool_lists, targets, baseline, has_baseline, history_us)
        for pos, shift in best.items():
            i = int(targets[pos])
            out.append(_verdict(ids[i], agent, shift))
    if not out:
        return no_anomalies()
    return anomalies(out)


def _best_shift(t: np.ndarray, tool_lists: list[list[str]], targets: np.ndarray, baseline: dict[str, float],
                has_baseline: np.ndarray, history_us: int) -> dict[int, dict]:
    """Per target position, the most significant shifted (tool, window) with its figures, and
    every tool shifted there."""
    names = sorted({name for tools in tool_lists for name in tools} | set(baseline))
    lo = np.searchsorted(t, t[targets] - history_us, "left")
    found: dict[int, list[dict]] = {}
    for name in names:
        used = np.fromiter((name in tools for tools in tool_lists), dtype=bool, count=len(tool_lists))
        cum = np.concatenate([[0], np.cumsum(used)])
        for window in WINDOWS:
            start = targets + 1 - window
            full = start >= 0
            if not full.any():
                continue
            start = np.maximum(start, 0)
            k = cum[targets + 1] - cum[start]
            n_ref = start - lo
            k_ref = cum[start] - cum[np.minimum(lo, start)]
            trailing = np.where(n_ref >= MIN_REFERENCE, k_ref / np.maximum(n_ref, 1), np.nan)
            p = np.where(has_baseline, float(baseline.get(name, 0.0)), trailing)
            share = k / window
            judgeable = full & ~np.isnan(p) & (p < COMMON_TOOL)
            drop = judgeable & (p >= MIN_SHARE) & (share <= DROP_RATIO * p)
            rise = (judgeable & (p >= MIN_RISING_SHARE) & (share >= RISE_RATIO * p)
                    & (share - p >= RISE_POINTS))
            safe_p = np.clip(np.nan_to_num(p, nan=0.5), 1e-9, 1 - 1e-9)
            tail = np.where(drop, binom.cdf(k, window, safe_p), np.where(rise, binom.sf(k - 1, window, safe_p), 1.0))
            for pos in np.nonzero(tail < SHIFT_TAIL)[0]:
                found.setdefault(int(pos), []).append({
                    "tool": name, "direction": "dropped" if drop[pos] else "rose", "window_sessions": window,
                    "window_calls": int(k[pos]), "window_share": float(share[pos]),
                    "reference_share": float(p[pos]), "tail_probability": float(tail[pos]),
                    "reference": "baseline" if has_baseline[pos] else "trailing",
                    "reference_sessions": None if has_baseline[pos] else int(n_ref[pos])})
    best = {}
    for pos, shifts in found.items():
        top = min(shifts, key=lambda s: (s["tail_probability"], s["window_sessions"], s["tool"]))
        best[pos] = {**top, "shifted_tools": sorted({s["tool"] for s in shifts})}
    return best


def _verdict(session_id: str, agent: str, s: dict) -> dict:
    points = abs(s["window_share"] - s["reference_share"])
    severity = "major" if points >= MAJOR_POINTS else "minor"
    reference = "its baseline" if s["reference"] == "baseline" else "its 7 days before"
    text = (f"tool {s['tool']} was called by {pct(s['window_share'])} of this agent's last {s['window_sessions']} "
            f"sessions ({s['window_calls']}), against {pct(s['reference_share'])} in {reference} "
            f"(binomial tail probability {s['tail_probability']:.1e})")
    others = [name for name in s["shifted_tools"] if name != s["tool"]]
    if others:
        text += f"; also shifted: {', '.join(others[:4])}"
    details = dict(s)
    score = -np.log10(max(s["tail_probability"], 1e-300))
    return {"session_id": session_id, "agent_name": agent, "anomaly_type": TOOL_SHARE_SHIFT, "severity": severity,
            "score": float(round(score, 4)), "explanation": capitalized(text), "details": to_json(details)}

