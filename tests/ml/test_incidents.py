"""Incidents (``ml.incidents``): verdicts that belong together as one object, opened early and
once per event, silent on healthy traffic, the same however the verdicts were batched.

Simulated traffic (tests/support/ml.py) with one injected fault at a time, the issue's two
faults in one run, small hand-made streams for the rules' numbers, and labelled real-world
series (the Turing Change Point Dataset series that the ``river`` package ships).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from ml import incidents
from ml.anomaly import detect
from ml.incidents import INCIDENT_SCHEMA, Policy
from ml.verdicts import TOOL_SHARE_SHIFT
from simulator.faults import FAULT_TYPES
from tests.support.ml import (
    JUDGED,
    START,
    auto_baselines,
    day_bounds,
    judged,
    scenario_anomalies,
    scenario_forests,
    scenario_frames,
    scenario_regressions,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
OPENED = pl.col("opened_at").is_not_null()


def _grouped(*specs: str, forests: bool = False) -> tuple[incidents.IncidentUpdate, pl.DataFrame, pl.DataFrame]:
    frame, truth = scenario_frames(*specs)
    sessions = judged(frame, JUDGED)
    anomalies = scenario_anomalies(*specs)
    if forests:
        anomalies = pl.concat([anomalies, scenario_forests(*specs)], how="vertical")
    verdicts = incidents.verdict_frame(anomalies, scenario_regressions(*specs), sessions)
    return incidents.group(verdicts, sessions), verdicts, truth.join(frame, on="session_id")


# ------------------------------------------------------------------ the simulated faults

# How long after its first faulty session each fault's incident may open (in data time):
# what these seeded runs measure, with room. Spikes and faults that shape every session
# open within minutes; a third of the sessions (confident_hallucination, at night) takes
# about an hour; cascades through a pipeline that runs about once an hour at night need
# several failed runs before they are improbable; cost_creep's ground truth starts at +10%,
# which is not yet distinguishable from noise.
OPEN_WITHIN = {
    "cost_spike": timedelta(minutes=5), "skill_bloat": timedelta(minutes=5),
    "tool_usage_change": timedelta(minutes=30), "model_change": timedelta(minutes=30),
    "context_rot": timedelta(minutes=30), "sequential_tax": timedelta(minutes=45),
    "latency_spike": timedelta(hours=1), "confident_hallucination": timedelta(hours=2),
    "cost_creep": timedelta(hours=7), "cascade_failure": timedelta(hours=6),
}


# The injections of tests/ml/test_ml.py (so the simulated runs are shared).
SPECS = {fault: f"{fault}@50%" for fault in FAULT_TYPES} | {
    "cost_spike": "cost_spike@55%..65%", "latency_spike": "latency_spike@55%..65%", "cost_creep": "cost_creep@40%"}


@pytest.mark.parametrize("fault", list(FAULT_TYPES))
def test_each_injected_fault_opens_one_incident_early(fault):
    grouped, verdicts, truth = _grouped(SPECS[fault])
    opened = grouped.incidents.filter(OPENED)
    assert opened.height == 1, opened.select("agent_name", "kind", "first_seen", "summary").rows()
    incident = opened.row(0, named=True)
    faulty = truth.filter(pl.col("fault_type") == fault)
    assert incident["kind"] == fault
    assert incident["agent_name"] == FAULT_TYPES[fault]  # a cascade is its orchestrator's incident
    first_faulty = faulty.get_column("started_at").min()
    assert first_faulty <= incident["opened_at"] <= first_faulty + OPEN_WITHIN[fault]
    assert incident["first_seen"] <= incident["opened_at"]
    # it gathers the fault's verdicts, and the regressions of the same sessions with them
    members = grouped.members.filter(pl.col("incident_id") == incident["incident_id"])
    injected_flagged = verdicts.filter(pl.col("verdict_type") == fault).join(faulty, on="session_id", how="semi")
    assert members.filter(pl.col("verdict_type") == fault).height >= 0.95 * injected_flagged.height
    events = grouped.events.filter(pl.col("incident_id") == incident["incident_id"])
    assert events.filter(pl.col("event") == "opened").height == 1
    assert len(incident["example_session_ids"]) == 5
    assert set(incident["example_session_ids"]) <= set(members.get_column("session_id"))


def test_a_cost_spike_is_one_critical_incident_with_its_regressions_that_resolves_after_it():
    grouped, verdicts, truth = _grouped(SPECS["cost_spike"])
    incident = grouped.incidents.filter(OPENED).row(0, named=True)
    spike = truth.filter(pl.col("fault_type") == "cost_spike")
    # one incident holds both the cost_spike anomalies and the cost regressions of its sessions
    members = grouped.members.filter(pl.col("incident_id") == incident["incident_id"])
    assert set(members.get_column("verdict_type")) == {"cost_spike", "regression"}
    assert incident["opened_severity"] == incident["peak_severity"] == "critical"
    assert incident["opened_at"] == incident["first_seen"] == spike.get_column("started_at").min()
    # resolved two hours after its last verdict (30 sessions of the agent came sooner)
    assert incident["status"] == "resolved" and incident["resolution"] == "quiet"
    assert incident["resolved_at"] == incident["last_seen"] + timedelta(hours=2)
    assert incident["last_seen"] <= spike.get_column("started_at").max() + timedelta(minutes=30)
    # its traffic share, counted independently
    frame = scenario_frames(SPECS["cost_spike"])[0]
    span = frame.filter((pl.col("agent_name") == incident["agent_name"])
                        & pl.col("started_at").is_between(incident["first_seen"], incident["last_seen"]))
    affected = members.filter(pl.col("agent_name") == incident["agent_name"]).get_column("session_id").n_unique()
    assert (incident["span_sessions"], incident["affected_sessions"]) == (span.height, affected)
    assert incident["traffic_share"] == pytest.approx(affected / span.height)
    ratio = json.loads(incident["figures"])["n"]["cost_spike.ratio"]
    assert ratio[0] == verdicts.filter(pl.col("verdict_type") == "cost_spike").join(
        members, on=["session_id", "verdict_type"], how="semi").height
    assert incident["summary"].startswith(f"Cost per LLM call {ratio[1] / ratio[0]:.1f}x the trailing 7-day median")
    assert f"of {incident['agent_name']}'s traffic since" in incident["summary"]
    assert [e["event"] for e in grouped.events.iter_rows(named=True)] == ["opened", "resolved"]


def test_summaries_say_what_changed_in_numbers():
    model = _grouped("model_change@50%")[0].incidents.filter(OPENED).row(0, named=True)
    assert model["summary"].startswith("Model gpt-4o -> gpt-4.1 on ")
    tools = _grouped("tool_usage_change@50%")[0].incidents.filter(OPENED).row(0, named=True)
    assert tools["summary"].startswith("No longer called: tool get_customer (called by 100% of sessions before)")
    cascade = _grouped("cascade_failure@50%")[0].incidents.filter(OPENED).row(0, named=True)
    assert cascade["summary"].startswith("Failures propagating from retriever-agent")


def test_the_clean_control_opens_nothing():
    grouped, verdicts, _ = _grouped(forests=True)
    assert verdicts.height > 5  # the odd single-session verdict of healthy traffic ...
    assert grouped.incidents.filter(OPENED).is_empty()  # ... opens no incident
    assert grouped.events.is_empty()
    assert set(grouped.incidents.get_column("status")) <= {"discarded", "pending"}


def test_a_week_with_a_model_change_and_a_cost_spike_is_two_incidents_and_two_opening_alerts():
    # The run: a model change, and later a cost spike of 5% of the range on the same agent.
    specs = ("model_change@50%", "cost_spike@70%")
    grouped, _, truth = _grouped(*specs)
    opened = grouped.incidents.filter(OPENED).sort("first_seen")
    assert opened.get_column("kind").to_list() == ["model_change", "cost_spike"]
    events = grouped.events.sort("at")
    assert events.filter(pl.col("event") == "opened").get_column("kind").to_list() == ["model_change", "cost_spike"]
    # the spike ends and its incident resolves; the model change goes on, its incident open
    assert events.filter(pl.col("event") == "resolved").get_column("kind").to_list() == ["cost_spike"]
    assert events.filter(pl.col("event") == "escalated").is_empty()
    spike = opened.filter(pl.col("kind") == "cost_spike").row(0, named=True)
    assert spike["opened_at"] == truth.filter(pl.col("fault_type") == "cost_spike").get_column("started_at").min()


# ------------------------------------------------------------------ batching, identity


def _replay(verdicts: pl.DataFrame, sessions: pl.DataFrame, cuts: list[datetime]):
    """update() called once per piece between the cuts, each with the previous state."""
    state, rows, members, events = incidents.no_incidents(), {}, [], []
    bounds = [sessions.get_column("started_at").min(), *cuts, sessions.get_column("started_at").max()
              + timedelta(microseconds=1)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        piece = sessions.filter(pl.col("started_at").is_between(lo, hi, closed="left"))
        if piece.is_empty():
            continue
        out = incidents.update(state, verdicts.filter(pl.col("session_started_at").is_between(lo, hi, closed="left")),
                               piece)
        rows.update({r["incident_id"]: r for r in out.incidents.iter_rows(named=True)})
        state = out.incidents.filter(pl.col("status").is_in(["pending", "open"]))
        members.append(out.members)
        events.append(out.events)
    frame = pl.DataFrame(list(rows.values()), schema=INCIDENT_SCHEMA).sort(
        "project_id", "first_seen", "agent_name", "kind", "incident_id")
    return frame, pl.concat(members), pl.concat(events)


def _same(pieces, whole: incidents.IncidentUpdate) -> None:
    frame, members, events = pieces
    assert frame.equals(whole.incidents)
    order = ["incident_id", "session_id", "verdict_type"]
    assert members.sort(order).equals(whole.members.sort(order))
    assert events.equals(whole.events)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=3 * 24 * 60 - 1), max_size=12, unique=True))
def test_replaying_simulated_days_in_any_pieces_gives_the_same_incidents(minutes):
    # the latency spike: verdicts, an escalation, a resolution, and discarded pending ones
    spec = SPECS["latency_spike"]
    frame, _ = scenario_frames(spec)
    sessions = judged(frame, JUDGED)
    verdicts = incidents.verdict_frame(scenario_anomalies(spec), scenario_regressions(spec), sessions)
    whole = incidents.group(verdicts, sessions)
    assert set(whole.events.get_column("event")) == {"opened", "escalated", "resolved"}
    start = day_bounds(JUDGED[0])[0]
    _same(_replay(verdicts, sessions, [start + timedelta(minutes=m) for m in sorted(minutes)]), whole)


KINDS = ["cost_spike", "latency_spike", "model_change", "regression", "isolation_forest", TOOL_SHARE_SHIFT]


@st.composite
def _streams(draw):
    """Two agents' sessions minutes to hours apart, each with none, one or several verdicts."""
    n = draw(st.integers(min_value=1, max_value=120))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=240), min_size=n, max_size=n))
    sessions, verdicts, t = [], [], T0
    for i, gap in enumerate(gaps):
        t += timedelta(minutes=gap)
        agent = draw(st.sampled_from(["a", "b"]))
        sid = str(uuid.UUID(int=i + 1))
        sessions.append({"project_id": "p", "session_id": sid, "agent_name": agent, "started_at": t})
        for kind in draw(st.lists(st.sampled_from(KINDS), max_size=3, unique=True)):
            verdicts.append({"project_id": "p", "session_id": sid, "agent_name": agent, "session_started_at": t,
                             "verdict_type": kind, "severity": draw(st.sampled_from(["minor", "major", "critical"])),
                             "score": float(draw(st.integers(0, 9))), "details": "{}"})
    cuts = sorted({sessions[i]["started_at"] for i in draw(st.lists(st.integers(0, n - 1), max_size=8))})
    return (pl.DataFrame(verdicts, schema=incidents.VERDICT_SCHEMA),
            pl.DataFrame(sessions, schema={"project_id": pl.Utf8, "session_id": pl.Utf8, "agent_name": pl.Utf8,
                                           "started_at": pl.Datetime("us", "UTC")}), cuts)


@settings(max_examples=30, deadline=None)
@given(_streams())
def test_replaying_any_stream_in_any_pieces_gives_the_same_incidents(stream):
    verdicts, sessions, cuts = stream
    _same(_replay(verdicts, sessions, cuts), incidents.group(verdicts, sessions))


def test_incident_ids_depend_only_on_the_verdicts():
    grouped, verdicts, _ = _grouped("model_change@50%")
    frame = scenario_frames("model_change@50%")[0]
    again = incidents.group(verdicts.sample(fraction=1.0, shuffle=True, seed=2),
                            judged(frame, JUDGED).sample(fraction=1.0, shuffle=True, seed=3))
    assert again.incidents.equals(grouped.incidents)
    incident = grouped.incidents.filter(OPENED).row(0, named=True)
    first = incident["example_session_ids"][0]
    expected = uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "bagula:incidents"),
                          f"{incident['project_id']}|customer-support-agent|model_change|"
                          f"{incident['first_seen'].isoformat()}|{first}")
    assert incident["incident_id"] == str(expected)


# ------------------------------------------------------------------ the rules, by hand


def _stream(flags: list[str | None], *, agent: str = "a", kind: str = "cost_spike", every=timedelta(minutes=2)):
    """One session every two minutes; flags[i] is the severity of session i's verdict (or None)."""
    sessions = pl.DataFrame({"project_id": "p", "session_id": [str(uuid.UUID(int=i + 1)) for i in range(len(flags))],
                             "agent_name": agent, "started_at": [T0 + i * every for i in range(len(flags))]})
    rows = [{"project_id": "p", "session_id": s["session_id"], "agent_name": agent,
             "session_started_at": s["started_at"], "verdict_type": kind, "severity": flag, "score": 1.0,
             "details": "{}"} for s, flag in zip(sessions.iter_rows(named=True), flags, strict=True) if flag]
    return pl.DataFrame(rows, schema=incidents.VERDICT_SCHEMA), sessions


def test_minor_verdicts_open_an_incident_only_when_sustained():
    # three flagged sessions in a row: 0.02^3 = 8e-6 < 1e-4
    verdicts, sessions = _stream(["minor", "minor", "minor", None])
    opened = incidents.group(verdicts, sessions).incidents.row(0, named=True)
    assert opened["status"] == "open" and opened["opened_at"] == T0 + timedelta(minutes=4)
    assert (opened["affected_sessions"], opened["span_sessions"]) == (3, 3)
    # two in a row are not enough (0.02^2 = 4e-4), nor one in every sixty sessions for ever
    for flags in (["minor", "minor"] + [None] * 70, (["major"] + [None] * 69) * 10):
        grouped = incidents.group(*_stream(flags))
        assert grouped.incidents.filter(OPENED).is_empty() and grouped.events.is_empty()
        assert set(grouped.incidents.get_column("status")) == {"discarded"}  # after 2 quiet hours
    # one in five, sustained, is ten times a healthy rate: it opens once that is improbable
    k = next(k for k in range(2, 30) if binom.sf(k - 1, 5 * k - 4, 0.02) < 1e-4)
    opened = incidents.group(*_stream((["major"] + [None] * 4) * 30)).incidents.filter(OPENED)
    assert opened.get_column("opened_at").to_list() == [T0 + 5 * (k - 1) * timedelta(minutes=2)]


def test_a_critical_verdict_opens_at_once_and_a_rise_after_opening_escalates():
    grouped = incidents.group(*_stream([None, "critical"]))
    assert grouped.incidents.row(0, named=True)["opened_at"] == T0 + timedelta(minutes=2)
    grouped = incidents.group(*_stream(["minor", "minor", "minor", "major", "minor", "critical"]))
    assert [(e["event"], e["severity"]) for e in grouped.events.iter_rows(named=True)] == [
        ("opened", "minor"), ("escalated", "major"), ("escalated", "critical")]
    incident = grouped.incidents.row(0, named=True)
    assert (incident["opened_severity"], incident["peak_severity"]) == ("minor", "critical")


def test_an_incident_resolves_after_two_quiet_hours_and_thirty_quiet_sessions():
    # busy agent (a session every 2 minutes): 30 sessions in an hour, so 2 hours decide
    verdicts, sessions = _stream(["critical"] + [None] * 100)
    incident = incidents.group(verdicts, sessions).incidents.row(0, named=True)
    assert incident["resolved_at"] == T0 + timedelta(hours=2)
    # quiet agent (a session every 10 minutes): the 30th quiet session decides (5 hours)
    verdicts, sessions = _stream(["critical"] + [None] * 40, every=timedelta(minutes=10))
    grouped = incidents.group(verdicts, sessions)
    assert grouped.incidents.row(0, named=True)["resolved_at"] == T0 + 30 * timedelta(minutes=10)
    assert grouped.events.get_column("event").to_list() == ["opened", "resolved"]
    # a verdict before the quiet period ended keeps it open; after, it starts a new incident
    verdicts, sessions = _stream(["critical"] + [None] * 28 + ["critical"] + [None] * 40 + ["critical"],
                                 every=timedelta(minutes=10))
    grouped = incidents.group(verdicts, sessions)
    assert grouped.incidents.get_column("first_seen").to_list() == [T0, T0 + 70 * timedelta(minutes=10)]
    # an agent that stops: resolved 24 hours after its last verdict, when the data gets there
    verdicts, sessions = _stream(["critical", None])
    quiet = incidents.group(verdicts, sessions, now=T0 + timedelta(hours=23)).incidents.row(0, named=True)
    assert quiet["status"] == "open"
    late = incidents.group(verdicts, sessions, now=T0 + timedelta(hours=30)).incidents.row(0, named=True)
    assert (late["status"], late["resolved_at"]) == ("resolved", T0 + timedelta(hours=24))


def test_corroborating_kinds_join_the_incident_that_explains_them_or_open_their_own():
    cost, sessions = _stream(["critical"] * 3 + [None] * 3)
    regressions = _stream(["major"] * 6, kind="regression")[0]
    grouped = incidents.group(pl.concat([cost, regressions]), sessions)
    [incident] = grouped.incidents.rows(named=True)
    assert incident["kind"] == "cost_spike" and incident["verdict_count"] == 9
    assert incident["affected_sessions"] == 6
    # alone, sustained regressions are an incident of their own kind
    alone = incidents.group(regressions, sessions).incidents.row(0, named=True)
    assert (alone["kind"], alone["status"]) == ("regression", "open")


def test_resolving_by_hand():
    grouped = incidents.group(*_stream(["critical", "critical"]))
    at = T0 + timedelta(minutes=30)
    done = incidents.resolve_by_hand(grouped.incidents, grouped.incidents.get_column("incident_id").to_list(), at)
    incident = done.incidents.row(0, named=True)
    assert (incident["status"], incident["resolution"], incident["resolved_at"]) == ("resolved", "hand", at)
    assert done.events.select("event", "at").rows() == [("resolved", at)]


def test_update_needs_no_policy_but_takes_one():
    verdicts, sessions = _stream(["minor", "minor"])
    assert incidents.group(verdicts, sessions).incidents.filter(OPENED).is_empty()
    eager = incidents.group(verdicts, sessions, policy=Policy(open_tail=1e-3))
    assert eager.incidents.filter(OPENED).height == 1


# ------------------------------------------------------------------ a shift no session shows


def _with_half_tool(frame: pl.DataFrame, until: datetime) -> pl.DataFrame:
    """Every other support session (by id) calls check_stock too, until ``until``."""
    half = (pl.col("agent_name") == "customer-support-agent") & (pl.col("started_at") < until) \
        & (pl.col("session_id").str.slice(-1).str.contains("[02468ace]"))
    return frame.with_columns(pl.when(half).then(pl.col("tool_sequence") + ",check_stock")
                              .otherwise(pl.col("tool_sequence")).alias("tool_sequence"))


def test_a_tool_half_the_sessions_called_going_out_of_use_is_one_incident():
    frame, _ = scenario_frames()
    stop = START + timedelta(days=2, hours=12)
    shifted = _with_half_tool(frame, stop)
    found = []
    for day in JUDGED:
        start, end = day_bounds(day)
        history = shifted.filter((pl.col("started_at") >= start - timedelta(days=7))
                                 & (pl.col("started_at") < end + timedelta(hours=1)))
        found.append(detect(history, day_start=start, day_end=end, baselines=auto_baselines(shifted, start)))
    anomalies = pl.concat(found)
    shifts = anomalies.filter(pl.col("anomaly_type") == TOOL_SHARE_SHIFT).join(shifted, on="session_id")
    # no single session is unusual: none of the per-session rules say anything about it
    assert anomalies.filter(pl.col("anomaly_type") != TOOL_SHARE_SHIFT).height <= 12
    # before the stop nothing; after it, found within 32 of the agent's sessions, then on each
    support = shifted.filter(pl.col("agent_name") == "customer-support-agent").sort("started_at")
    after = support.filter(pl.col("started_at") >= stop)
    assert shifts.get_column("started_at").min() >= stop
    assert shifts.get_column("started_at").min() <= after.get_column("started_at")[31]
    assert shifts.height >= 0.95 * after.filter(pl.col("started_at") >= shifts.get_column("started_at").min()).height
    first = json.loads(shifts.sort("started_at").get_column("details")[0])
    assert first["tool"] == "check_stock" and first["direction"] == "dropped"
    assert 0.4 <= first["reference_share"] <= 0.6 and first["window_share"] <= first["reference_share"] / 2
    assert first["tail_probability"] < 1e-5
    sessions = judged(shifted, JUDGED)
    grouped = incidents.group(incidents.verdict_frame(anomalies, None, sessions), sessions)
    [incident] = grouped.incidents.filter(OPENED).rows(named=True)
    assert incident["kind"] == TOOL_SHARE_SHIFT
    assert incident["summary"].startswith("Tool check_stock gone from 5")  # ~50% of sessions
    assert incident["opened_at"] <= after.get_column("started_at")[31]


# ------------------------------------------------------------------ real-world series


def test_real_world_series_get_few_early_incidents_and_little_noise():
    pytest.importorskip("river", reason="the labelled series come with the river package (river==0.26.1)")
    from tests.support.ml import judge_days, score_series, series_days, series_frame, tcpd_series

    scores = []
    for name, values, marked in tcpd_series():
        frame = series_frame(values)
        anomalies, regressions = judge_days(frame, series_days(frame))
        verdicts = incidents.verdict_frame(anomalies, regressions, frame)
        grouped = incidents.group(verdicts, frame)
        scores.append(score_series(name, values, grouped.incidents, marked, verdicts=verdicts.height))
    # floors: what this measures (bench/incidents_realworld.py), with some room
    assert sum(s.verdicts for s in scores) >= 30 * sum(s.incidents for s in scores)  # ~900 verdicts, ~15 incidents
    assert sum(s.events for s in scores) == 10  # rises most annotators marked
    assert sum(s.early for s in scores) >= 2 and sum(s.detected for s in scores) >= 3
    assert sum(s.false for s in scores) <= 8
    assert max(s.incidents for s in scores) <= 5
