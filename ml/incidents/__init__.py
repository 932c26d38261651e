"""Incidents: the verdicts of one project, agent and kind that belong together, as one
object an on-call engineer can act on (pure functions over frames, like all of ``ml``).

Rules (numbers in ``Policy``; everything in data time, the sessions' start times):

* **Kind.** An incident is of one kind: an anomaly type or ``regression``. Kinds that
  say *why* (the rules and failure modes) group on their own. Kinds that only say
  *what* differs (``regression`` against the baseline, ``isolation_forest``, the window
  shifts such as ``tool_share_shift``) *corroborate*: such a verdict joins the incident
  of a why-kind verdict on the same session, else the agent's most recently active open
  why-kind incident, and only when there is none does it group under its own kind.
  So a cost spike (whose sessions are cost_spike anomalies *and* cost regressions) is one
  incident, not two. Likewise a non-critical why-kind verdict on a session that an open
  incident of another kind already explains (a latency rise on a session answered by the
  new model of an open model_change incident) is a symptom of that incident, as is one
  whose kind is of the same family as an open incident of the agent (cost_spike and
  cost_creep; latency_spike and sequential_tax). A critical verdict always counts for its
  own kind. A ``cascade_failure`` verdict on a failed child session belongs to its parent
  agent's incident: one cascade, one incident.
* **Joining.** A verdict joins the pending or open incident of its (project, agent,
  kind); when there is none it starts a pending one, whose id is a uuid5 of project,
  agent, kind, the first verdict's session start and session id, so a backfill of the
  same days reproduces the same ids.
* **Opening.** A pending incident opens (event ``opened``) on its first critical verdict,
  on its first major one for kinds whose verdicts are already tests over a window of
  sessions (``cascade_failure``, ``cost_creep``, ``tool_share_shift``), or once its
  flagged sessions are improbable for a healthy agent: a binomial tail below 1e-4 for
  that many of the agent's sessions since the first one, at a background rate of 2% per
  kind. That is 3 flagged sessions within 5, 4 within 10 (or 13), 5 within 20, 6 within
  30, 10 within 100: a fault that flags a third of the sessions or more opens within a
  dozen of them, and a verdict here and there (a healthy agent's kinds flag well under 1%
  of its sessions: the simulated clean control 0.25% for all kinds together) never does.
  ``first_seen`` stays the first verdict's session: the incident says when it started,
  ``opened_at`` when it became clear.
* **Resolving.** An incident resolves itself (event ``resolved``, ``resolution`` "quiet")
  once it has had no verdict for 2 hours *and* 30 of its agent's sessions, or for 24
  hours whatever the traffic; ``resolved_at`` is the moment that quiet period ended.
  In the simulated faults, consecutive flagged sessions of one incident were at most 13
  clean sessions apart (a fault flagging a third of them) and up to 4 h 48 min apart
  (cascades through a pipeline running about once an hour at night, 6 sessions between):
  time alone would split such an incident, session counts alone would close a quiet
  agent's too soon; 30 clean sessions are evidence that a fault stopped (one that flags a
  third of the sessions leaves 30 clean ones in a row with probability 5e-6), 2 hours keep
  a busy agent's incident from closing on a short lull.
  A pending incident that goes as quiet is discarded. A later verdict of the same key
  starts a new incident. Resolving by hand: ``resolve_by_hand``.
* **Severity.** ``peak_severity`` is the worst verdict of its kind (and of the kinds it
  explains) so far, its rise after opening the event ``escalated``; ``current_severity``
  the worst of the hour up to its latest verdict. Corroborating verdicts joined to a
  why-kind incident do not raise its severity (a critical cost regression on a session of
  an open model_change incident is the cost's business, not the model change's).
* **Figures.** ``affected_sessions``: the agent's sessions with a verdict in it;
  ``span_sessions``: all the agent's sessions from first_seen to last_seen;
  ``traffic_share`` their ratio. ``summary`` says what changed in numbers (``summaries``);
  ``example_session_ids``: its first session, then the most severe (severity, score,
  start, id).

API: ``verdict_frame`` (detectors' anomalies and regressions -> the verdicts frame),
``update`` (incremental: open incidents + new verdicts + judged sessions -> incidents,
memberships and events), ``group`` (all verdicts of a period at once), ``resolve_by_hand``.
Frames: ``frames``.
"""

from ml.incidents.frames import (
    EVENT_SCHEMA,
    EVENTS,
    INCIDENT_SCHEMA,
    MEMBER_SCHEMA,
    SESSION_COLUMNS,
    STATUSES,
    VERDICT_SCHEMA,
    no_incidents,
    verdict_frame,
)
from ml.incidents.grouping import (
    CORROBORATING,
    POLICY,
    IncidentUpdate,
    Policy,
    event_id,
    group,
    incident_id,
    resolve_by_hand,
    update,
)

__all__ = ["CORROBORATING", "EVENTS", "EVENT_SCHEMA", "INCIDENT_SCHEMA", "MEMBER_SCHEMA", "POLICY",
           "SESSION_COLUMNS", "STATUSES", "VERDICT_SCHEMA", "IncidentUpdate", "Policy", "event_id", "group",
           "incident_id", "no_incidents", "resolve_by_hand", "update", "verdict_frame"]
