"""Grouping verdicts into incidents: the state machine behind ``ml.incidents`` (its
docstring states the rules and their numbers).

Everything happens in data time. The verdicts and sessions of a call are merged into
one stream ordered by (session start, sessions before their verdicts, session id), and
walked once: each session counts towards the quiet period and traffic of its agent's
active incidents, each session's verdicts join or open incidents, and an incident whose
quiet period has run out by the time the stream reaches a later moment is resolved *at
the moment its quiet period ended* (not when it was noticed). So the outcome depends
only on the stream, never on how it was cut into calls: replaying the same verdicts one
day at a time, all at once or in any time-ordered pieces gives the same incidents,
memberships and events.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from scipy.stats import binom

from ml.features import iso, micros, parse_iso
from ml.incidents.frames import (
    EVENT_SCHEMA,
    INCIDENT_SCHEMA,
    MEMBER_SCHEMA,
    SESSION_COLUMNS,
    VERDICT_SCHEMA,
)
from ml.incidents.summaries import Figures, observe, render
from ml.verdicts import ISOLATION_FOREST, REGRESSION, SEVERITIES, SEVERITY_RANK, WINDOW_SHIFTS

# Kinds that say *what* differs but not *why*: they join an open incident of the same
# agent when there is one (see the package docstring).
CORROBORATING = frozenset({REGRESSION, ISOLATION_FOREST, *WINDOW_SHIFTS})
CASCADE = "cascade_failure"
# Kinds whose every verdict is already a test over a window of sessions (a cascade rate, a
# creep's level and trend, a tool's share): one major verdict is evidence enough to open.
WINDOW_EVIDENCE = frozenset({CASCADE, "cost_creep", *WINDOW_SHIFTS})
MAJOR = SEVERITY_RANK["major"]
# Kinds that see one symptom in two ways: a cost spike that settles into a higher level is
# then a creep; a latency spike and lost tool parallelism are both slow sessions.
FAMILIES = {"cost_spike": "cost", "cost_creep": "cost", "latency_spike": "latency", "sequential_tax": "latency"}
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "bagula:incidents")
CRITICAL = SEVERITY_RANK["critical"]


@dataclass(frozen=True)
class Policy:
    """The grouping's numbers (the package docstring says why these)."""

    quiet: timedelta = timedelta(hours=2)  # at least this long without a verdict ...
    quiet_sessions: int = 30  # ... and this many of the agent's sessions without one
    quiet_max: timedelta = timedelta(hours=24)  # resolved after this long whatever the traffic
    background_rate: float = 0.02  # share of a healthy agent's sessions one kind may flag
    open_tail: float = 1e-4  # flagged sessions this improbable at that rate open the incident
    min_sessions: int = 2  # ... and at least this many of them, unless one is critical
    current_window: timedelta = timedelta(hours=1)  # current severity: worst verdict this recent
    examples: int = 5  # example sessions kept per incident


POLICY = Policy()


@dataclass
class IncidentUpdate:
    """What ``update`` returns: every incident it was given or made (INCIDENT_SCHEMA; persist
    them by incident_id and pass the pending and open ones to the next call), the new
    memberships (MEMBER_SCHEMA) and the new events (EVENT_SCHEMA: send each once, by
    event_id)."""

    incidents: pl.DataFrame
    members: pl.DataFrame
    events: pl.DataFrame


@dataclass
class _Verdict:
    session_id: str
    agent: str  # the session's agent
    key_agent: str  # the agent whose incident it belongs to (a cascade's parent agent)
    t: datetime
    verdict_type: str
    rank: int
    score: float
    details: str | None


@dataclass
class _Incident:
    incident_id: str
    project_id: str
    agent: str
    kind: str
    status: str
    first_seen: datetime
    last_seen: datetime
    opened_at: datetime | None = None
    resolved_at: datetime | None = None
    resolution: str | None = None
    opened_rank: int | None = None
    peak: int = 0
    affected: int = 0
    span: int = 0
    verdicts: int = 0
    since_last: int = 0  # the agent's sessions after last_seen
    quiet_at: datetime | None = None  # when since_last reached quiet_sessions
    last_at: dict[str, int] = field(default_factory=dict)  # severity -> its latest session start (epoch us)
    examples: dict[str, list] = field(default_factory=dict)  # session id -> sort key
    first_session_id: str = ""
    last_session_id: str = ""
    figures: Figures = field(default_factory=Figures)
    touched: bool = False

    # -- time

    def due(self, policy: Policy) -> datetime | None:
        """When its quiet period ends (resolved, or discarded while pending), as things stand."""
        if self.status not in ("pending", "open"):
            return None
        due = self.last_seen + policy.quiet_max
        if self.quiet_at is not None:
            due = min(due, max(self.last_seen + policy.quiet, self.quiet_at))
        return due

    def count_session(self, t: datetime, policy: Policy) -> None:
        if t < self.last_seen:
            self.span += 1  # a late session inside its span
            return
        self.since_last += 1
        if self.since_last == policy.quiet_sessions and self.quiet_at is None:
            self.quiet_at = t

    # -- verdicts

    def join(self, session_id: str, agent: str, t: datetime, verdicts: list[_Verdict], policy: Policy) -> None:
        self.touched = True
        own = agent == self.agent
        if own and session_id != self.last_session_id:
            self.affected += 1
            if t >= self.last_seen:
                self.span += self.since_last
                self.since_last = 0
                self.quiet_at = None
            self.last_session_id = session_id
        if t > self.last_seen:
            self.last_seen = t
        for v in verdicts:
            self.verdicts += 1
            # A corroborating verdict adds its session and figures to a why-kind incident but not
            # its severity: a critical cost regression on a session of an open model_change
            # incident says the cost rose, not that the model change became critical.
            if self.kind in CORROBORATING or v.verdict_type not in CORROBORATING:
                self.peak = max(self.peak, v.rank)
                severity = SEVERITIES[v.rank]
                self.last_at[severity] = max(self.last_at.get(severity, micros(t)), micros(t))
            self.figures.add(v.verdict_type, observe(v.verdict_type, v.details))
            key = [-v.rank, -v.score, micros(t), session_id]
            if session_id not in self.examples or key < self.examples[session_id]:
                self.examples[session_id] = key
        keep = sorted(self.examples.values())[:policy.examples]
        self.examples = {k[3]: k for k in keep}

    def current(self, policy: Policy) -> int:
        since = micros(self.last_seen - policy.current_window)
        recent = [SEVERITY_RANK[s] for s, at in self.last_at.items() if at >= since]
        return max(recent) if recent else self.peak

    def opens(self, policy: Policy) -> bool:
        if self.peak >= CRITICAL or (self.peak >= MAJOR and self.kind in WINDOW_EVIDENCE):
            return True
        if self.affected < policy.min_sessions:
            return False
        tail = float(binom.sf(self.affected - 1, max(self.span, self.affected), policy.background_rate))
        return tail < policy.open_tail

    def example_ids(self, policy: Policy) -> list[str]:
        ranked = [k[3] for k in sorted(self.examples.values()) if k[3] != self.first_session_id]
        return [self.first_session_id, *ranked][:policy.examples]

    def share(self) -> float | None:
        return self.affected / self.span if self.span else None

    def summary(self) -> str:
        return render(self.kind, self.agent, self.figures, affected=self.affected, share=self.share(),
                      first_seen=self.first_seen, verdicts=self.verdicts)

    # -- rows

    def row(self, policy: Policy) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id, "project_id": self.project_id, "agent_name": self.agent,
            "kind": self.kind, "status": self.status, "first_seen": self.first_seen, "last_seen": self.last_seen,
            "opened_at": self.opened_at, "resolved_at": self.resolved_at, "resolution": self.resolution,
            "opened_severity": None if self.opened_rank is None else SEVERITIES[self.opened_rank],
            "peak_severity": SEVERITIES[self.peak], "current_severity": SEVERITIES[self.current(policy)],
            "affected_sessions": self.affected, "span_sessions": self.span, "traffic_share": self.share(),
            "verdict_count": self.verdicts, "summary": self.summary(), "example_session_ids": self.example_ids(policy),
            "figures": self.figures.to_json(),
            "state": json.dumps({"since_last": self.since_last, "quiet_at": iso(self.quiet_at),
                                 "last_at": self.last_at, "examples": sorted(self.examples.values()),
                                 "first_session_id": self.first_session_id,
                                 "last_session_id": self.last_session_id}, sort_keys=True, separators=(",", ":")),
        }

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> _Incident:
        state = json.loads(r["state"]) if r.get("state") else {}
        return cls(
            incident_id=r["incident_id"], project_id=r["project_id"], agent=r["agent_name"], kind=r["kind"],
            status=r["status"], first_seen=r["first_seen"], last_seen=r["last_seen"], opened_at=r["opened_at"],
            resolved_at=r["resolved_at"], resolution=r["resolution"],
            opened_rank=None if r["opened_severity"] is None else SEVERITY_RANK[r["opened_severity"]],
            peak=SEVERITY_RANK[r["peak_severity"]], affected=r["affected_sessions"], span=r["span_sessions"],
            verdicts=r["verdict_count"], since_last=state.get("since_last", 0),
            quiet_at=parse_iso(state.get("quiet_at")), last_at=state.get("last_at") or {},
            examples={k[3]: k for k in state.get("examples") or []},
            first_session_id=state.get("first_session_id", ""), last_session_id=state.get("last_session_id", ""),
            figures=Figures(json.loads(r["figures"]) if r.get("figures") else None),
        )


def incident_id(project_id: str, agent: str, kind: str, first_seen: datetime, session_id: str) -> str:
    """Deterministic: a backfill of the same verdicts names its incidents the same."""
    return str(uuid.uuid5(NAMESPACE, f"{project_id}|{agent}|{kind}|{iso(first_seen)}|{session_id}"))


def event_id(incident: str, event: str, severity: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{incident}|{event}|{severity}"))


class _Run:
    """One project's stream walked through its incidents."""

    def __init__(self, project_id: str, incidents: list[_Incident], policy: Policy) -> None:
        self.project_id = project_id
        self.policy = policy
        self.all = {i.incident_id: i for i in incidents}
        self.active: dict[tuple[str, str], _Incident] = {}
        for i in sorted(incidents, key=lambda i: (i.last_seen, i.incident_id)):
            if i.status in ("pending", "open"):
                self.active[(i.agent, i.kind)] = i
        self.members: list[dict] = []
        self.events: list[dict] = []

    def advance(self, clock: datetime) -> None:
        """Resolve (or discard) every incident whose quiet period ended by ``clock``."""
        due = [(i.due(self.policy), i) for i in self.active.values()]
        for when, incident in sorted(((w, i) for w, i in due if w is not None and w <= clock),
                                     key=lambda pair: (pair[0], pair[1].incident_id)):
            del self.active[(incident.agent, incident.kind)]
            incident.touched = True
            incident.resolved_at = when
            if incident.status == "open":
                incident.status, incident.resolution = "resolved", "quiet"
                self._event(incident, "resolved", incident.peak, when)
            else:
                incident.status = "discarded"

    def session(self, agent: str, t: datetime) -> None:
        for incident in self.active.values():
            if incident.agent == agent:
                incident.count_session(t, self.policy)

    def verdicts(self, session_id: str, agent: str, t: datetime, verdicts: list[_Verdict]) -> None:
        targets: dict[str, tuple[_Incident, list[_Verdict]]] = {}
        primary = sorted((v for v in verdicts if v.verdict_type not in CORROBORATING),
                         key=lambda v: (-v.rank, v.verdict_type))
        # The open incident that already explains this session, if any: a non-critical verdict
        # of another kind on it is a symptom of the same cause, not evidence of a new one.
        explaining = next((i for i in (self.active.get((v.key_agent, v.verdict_type)) for v in primary)
                           if i is not None and i.status == "open"), None)
        for v in primary:
            own = self.active.get((v.key_agent, v.verdict_type))
            related = self._open_related(v) if v.rank < CRITICAL else None
            if own is not None and own.status == "open":
                incident = own
            elif explaining is not None and v.rank < CRITICAL:
                incident = explaining
            elif related is not None:
                incident = related
            else:
                incident = own or self._new(v)
            targets.setdefault(incident.incident_id, (incident, []))[1].append(v)
        first = targets[next(iter(targets))][0] if targets else None
        for v in sorted((v for v in verdicts if v.verdict_type in CORROBORATING), key=lambda v: v.verdict_type):
            incident = first or self._open_primary(agent) or self.active.get((v.key_agent, v.verdict_type)) \
                or self._new(v)
            targets.setdefault(incident.incident_id, (incident, []))[1].append(v)
        for incident, joined in targets.values():
            before = incident.peak
            incident.join(session_id, agent, t, joined, self.policy)
            for v in joined:
                self.members.append({"incident_id": incident.incident_id, "project_id": self.project_id,
                                     "agent_name": v.agent, "session_id": v.session_id,
                                     "verdict_type": v.verdict_type, "session_started_at": v.t,
                                     "severity": SEVERITIES[v.rank]})
            if incident.status == "pending" and incident.opens(self.policy):
                incident.status, incident.opened_at, incident.opened_rank = "open", t, incident.peak
                self._event(incident, "opened", incident.peak, t)
            elif incident.status == "open" and incident.peak > before:
                self._event(incident, "escalated", incident.peak, t)

    def _open_related(self, v: _Verdict) -> _Incident | None:
        """An open incident of the same agent whose kind is of the verdict's family."""
        family = FAMILIES.get(v.verdict_type)
        if family is None:
            return None
        candidates = [i for i in self.active.values() if i.agent == v.key_agent and i.status == "open"
                      and i.kind != v.verdict_type and FAMILIES.get(i.kind) == family]
        return max(candidates, key=lambda i: (i.last_seen, i.kind)) if candidates else None

    def _open_primary(self, agent: str) -> _Incident | None:
        """The agent's most recently active open incident of a kind that says why."""
        candidates = [i for i in self.active.values()
                      if i.agent == agent and i.status == "open" and i.kind not in CORROBORATING]
        return max(candidates, key=lambda i: (i.last_seen, i.kind)) if candidates else None

    def _new(self, v: _Verdict) -> _Incident:
        incident = _Incident(incident_id=incident_id(self.project_id, v.key_agent, v.verdict_type, v.t, v.session_id),
                             project_id=self.project_id, agent=v.key_agent, kind=v.verdict_type, status="pending",
                             first_seen=v.t, last_seen=v.t, first_session_id=v.session_id)
        if v.agent == v.key_agent:
            incident.span = 1
            incident.last_session_id = ""
        self.all[incident.incident_id] = incident
        self.active[(incident.agent, incident.kind)] = incident
        return incident

    def _event(self, incident: _Incident, event: str, rank: int, at: datetime) -> None:
        severity = SEVERITIES[rank]
        self.events.append({
            "event_id": event_id(incident.incident_id, event, severity), "incident_id": incident.incident_id,
            "project_id": self.project_id, "agent_name": incident.agent, "kind": incident.kind, "event": event,
            "severity": severity, "at": at, "summary": incident.summary(), "affected_sessions": incident.affected,
            "traffic_share": incident.share(), "example_session_ids": incident.example_ids(self.policy)})


def _key_agent(verdict_type: str, agent: str, details: str | None) -> str:
    """A cascade is its parent agent's incident: the failed child's verdict names the parent."""
    if verdict_type == CASCADE and details:
        try:
            parent = json.loads(details).get("parent_agent")
        except (ValueError, AttributeError):
            parent = None
        if parent:
            return str(parent)
    return agent


def update(incidents: pl.DataFrame | None, verdicts: pl.DataFrame, sessions: pl.DataFrame, *,
           now: datetime | None = None, policy: Policy = POLICY) -> IncidentUpdate:
    """The incidents after this call's verdicts and sessions.

    ``incidents``: the pending and open incidents of earlier calls (INCIDENT_SCHEMA; others are
    returned unchanged). ``verdicts``: the new verdicts (VERDICT_SCHEMA, e.g. from
    ``verdict_frame``), all verdicts of a session in the same call. ``sessions``: the sessions
    judged in this call (SESSION_COLUMNS), with and without verdicts; they are what traffic
    shares and quiet periods count. ``now``: the data's present, the latest judged session
    start (the default), never the wall clock. Calls must come in time order (each call's
    sessions start after the previous call's, up to sessions a few minutes late)."""
    incidents = incidents if incidents is not None else pl.DataFrame(schema=INCIDENT_SCHEMA)
    verdicts = verdicts.select(list(VERDICT_SCHEMA)).cast(VERDICT_SCHEMA)
    sessions = sessions.select(list(SESSION_COLUMNS)).unique("session_id", keep="first")
    if now is None:
        latest = [frame.get_column(column).max() for frame, column in
                  ((sessions, "started_at"), (verdicts, "session_started_at")) if not frame.is_empty()]
        now = max(latest) if latest else None
    projects = sorted(set(incidents.get_column("project_id").to_list())
                      | set(verdicts.get_column("project_id").to_list())
                      | set(sessions.get_column("project_id").to_list()))
    rows, members, events = [], [], []
    for project in projects:
        given = incidents.filter(pl.col("project_id") == project)
        run = _Run(project, [_Incident.from_row(r) for r in given.iter_rows(named=True)], policy)
        _walk(run, verdicts.filter(pl.col("project_id") == project),
              sessions.filter(pl.col("project_id") == project), now)
        rows += [i.row(policy) for i in run.all.values()]
        members += run.members
        events += run.events
    order = ["project_id", "first_seen", "agent_name", "kind", "incident_id"]
    return IncidentUpdate(
        incidents=pl.DataFrame(rows, schema=INCIDENT_SCHEMA, orient="row").sort(order),
        members=pl.DataFrame(members, schema=MEMBER_SCHEMA, orient="row"),
        events=pl.DataFrame(events, schema=EVENT_SCHEMA, orient="row"),
    )


def group(verdicts: pl.DataFrame, sessions: pl.DataFrame, *, now: datetime | None = None,
          policy: Policy = POLICY) -> IncidentUpdate:
    """The incidents of a whole period at once (a backfill): ``update`` from no incidents."""
    return update(None, verdicts, sessions, now=now, policy=policy)


def _walk(run: _Run, verdicts: pl.DataFrame, sessions: pl.DataFrame, now: datetime | None) -> None:
    by_session: dict[str, list[_Verdict]] = {}
    for r in verdicts.iter_rows(named=True):
        by_session.setdefault(r["session_id"], []).append(_Verdict(
            session_id=r["session_id"], agent=r["agent_name"],
            key_agent=_key_agent(r["verdict_type"], r["agent_name"], r["details"]), t=r["session_started_at"],
            verdict_type=r["verdict_type"], rank=SEVERITY_RANK[r["severity"]], score=r["score"] or 0.0,
            details=r["details"]))
    stream: list[tuple] = [(r[3], 0, r[1], r[2]) for r in sessions.iter_rows()]
    stream += [(vs[0].t, 1, sid, vs[0].agent) for sid, vs in by_session.items()]
    stream.sort(key=lambda item: item[:3])
    clock: datetime | None = None
    for t, is_verdict, session_id, agent in stream:
        clock = t if clock is None else max(clock, t)
        run.advance(clock)
        if is_verdict:
            run.verdicts(session_id, agent, t, by_session[session_id])
        else:
            run.session(agent, t)
    if now is not None:
        run.advance(now if clock is None else max(clock, now))


def resolve_by_hand(incidents: pl.DataFrame, incident_ids: list[str], at: datetime,
                    policy: Policy = POLICY) -> IncidentUpdate:
    """The open ones among ``incident_ids`` resolved at ``at`` (resolution "hand"), with their
    ``resolved`` events; a later verdict of the same key starts a new incident."""
    rows, events = [], []
    wanted = set(incident_ids)
    for r in incidents.iter_rows(named=True):
        if r["incident_id"] in wanted and r["status"] == "open":
            incident = _Incident.from_row(r)
            incident.status, incident.resolution, incident.resolved_at = "resolved", "hand", at
            run = _Run(incident.project_id, [], policy)
            run._event(incident, "resolved", incident.peak, at)
            events += run.events
            r = incident.row(policy)
        rows.append(r)
    return IncidentUpdate(incidents=pl.DataFrame(rows, schema=INCIDENT_SCHEMA, orient="row"),
                          members=pl.DataFrame(schema=MEMBER_SCHEMA),
                          events=pl.DataFrame(events, schema=EVENT_SCHEMA, orient="row"))
