"""Delivering the alert outbox to Slack-compatible webhooks, each alert exactly once.

Alerts are per incident event (opened, escalated, resolved; ``incidents.py`` creates them with
the event) and go to their project's route (``alert_routes``: a webhook and a minimum severity,
set with `bagula alerts route` or the API) or, without one, to BAGULA_ALERT_WEBHOOK_URL.

One pass takes each destination's pending alerts oldest first. Each is *claimed* with a short
statement (a lease in ``claimed_until``: a pass that crashes leaves it to the next one once the
lease runs out), then sent with no transaction or lock open while the webhook is slow, then
marked delivered. A crash between the receiver's answer and the mark repeats that one alert:
the header ``X-Bagula-Alert-Id`` lets a receiver drop the repeat. A webhook that is down or
answers 408, 429 or 5xx leaves the alert pending for the next pass. One that refuses an alert
for good (any other 4xx: a wrong URL, a revoked hook) pauses that destination instead of
burning its backlog: the alert is marked failed, ``alert_delivery`` records why, passes log it
and skip it, and ``bagula alerts requeue`` (after fixing the webhook) resumes and resends.
Errors are recorded without the webhook URL, which is a secret.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from orchestration.detection import links
from orchestration.detection.incidents import DEFAULT_DESTINATION
from orchestration.settings import OrchestrationSettings

log = logging.getLogger("bagula.alerts")

# Longer than one alert's attempts can take (attempts x (timeout + backoff)).
LEASE = timedelta(minutes=5)
ICONS = {"opened": ":rotating_light:", "escalated": ":arrow_double_up:", "resolved": ":white_check_mark:"}


@dataclass(frozen=True)
class PendingAlert:
    """What one alert says: an incident event, or (alerts made before incidents) one verdict."""

    alert_id: uuid.UUID
    project: str
    agent_name: str
    severity: str
    kind: str  # an anomaly type, or regression
    event: str | None  # opened / escalated / resolved; None for a verdict's alert
    text: str  # the incident's summary, or the verdict's explanation
    at: datetime | None  # the event's data time, or the session's start
    session_id: uuid.UUID | None
    incident_id: uuid.UUID | None
    affected_sessions: int | None
    traffic_share: float | None
    example_session_ids: list[uuid.UUID] | None
    score: float | None
    first_seen: datetime | None = None  # the incident's first verdict


def _mrkdwn(text: Any) -> str:
    """User-supplied text made inert in Slack mrkdwn: &, < and > are its only escapes."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: Any) -> str:
    """Text inside `code`, which a backtick would close."""
    return _mrkdwn(text).replace("`", "'")


def dashboard_links(superset_url: str | None, alert: PendingAlert) -> list[tuple[str, str]]:
    """(label, URL) into Superset (docs/superset.md): the agent's incidents and verdicts over the
    incident's hours, and its first example session. None without a public Superset URL."""
    if not superset_url or alert.at is None:
        return []
    if alert.event is None:  # a verdict's alert: its session, and the agent's verdicts that day
        since, until = links.hours_around(alert.at - timedelta(hours=6), alert.at)
        found = [("Verdicts", links.dashboard_url(superset_url, "regressions-and-anomalies",
                                                    agent=alert.agent_name, since=since, until=until))]
        return found + ([("Session", links.session_detail_url(superset_url, str(alert.session_id)))]
                        if alert.session_id else [])
    since, until = links.hours_around(alert.first_seen or alert.at, alert.at)
    found = [(label, links.dashboard_url(superset_url, slug, agent=alert.agent_name, since=since, until=until))
             for label, slug in (("Incidents", "incidents"), ("Verdicts", "regressions-and-anomalies"))]
    if alert.example_session_ids:
        found.append(("Example session", links.session_detail_url(superset_url, str(alert.example_session_ids[0]))))
    return found


def render(alert: PendingAlert, superset_url: str | None = None) -> dict[str, Any]:
    """The Slack-compatible message (``text`` for notifications, ``blocks`` for display)."""
    severity, kind, agent = alert.severity.upper(), alert.kind, alert.agent_name
    if alert.event is None:
        head = f"[{severity}] {kind} on {_mrkdwn(agent)}"
        context = (f"session `{alert.session_id}` started {alert.at.isoformat() if alert.at else 'unknown'} · "
                   f"project {_mrkdwn(alert.project)} · score "
                   + (f"{alert.score:.3f}" if alert.score is not None else "n/a"))
        title = f"*[{severity}] {kind}* on `{_code(agent)}`"
        icon = ":rotating_light:"
    else:
        icon = ICONS[alert.event]
        head = f"[{alert.event.upper()} · {severity}] {kind} incident on {_mrkdwn(agent)}"
        title = f"*[{alert.event.upper()} · {severity}] {kind}* incident on `{_code(agent)}`"
        share = f" ({alert.traffic_share:.0%} of its traffic)" if alert.traffic_share is not None else ""
        examples = ", ".join(f"`{s}`" for s in (alert.example_session_ids or [])[:3])
        context = (f"project {_mrkdwn(alert.project)} · {alert.affected_sessions} session(s){share} · "
                   f"incident `{alert.incident_id}`" + (f" · e.g. {examples}" if examples else ""))
    found = dashboard_links(superset_url, alert)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{title}\n{_mrkdwn(alert.text)}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
    ]
    if found:
        text = " · ".join(f"<{url}|{label}>" for label, url in found)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    return {"text": f"{icon} {head}: {_mrkdwn(alert.text)}", "blocks": blocks}


class WebhookRejected(Exception):
    """The receiver refused the alert for good (4xx other than 408/429): retrying won't help."""


class WebhookUnavailable(Exception):
    """No answer, or 408, 429 or 5xx: try again later."""


def webhook_sender(url: str, timeout_s: float, attempts: int) -> Callable[[PendingAlert, dict], None]:
    client = httpx.Client(timeout=timeout_s)

    @retry(stop=stop_after_attempt(attempts), wait=wait_exponential_jitter(initial=0.5, max=8),
           retry=retry_if_exception(lambda exc: isinstance(exc, WebhookUnavailable)), reraise=True)
    def send(alert: PendingAlert, payload: dict) -> None:
        try:
            response = client.post(url, json=payload, headers={"X-Bagula-Alert-Id": str(alert.alert_id)})
        except httpx.HTTPError as exc:
            # httpx's messages name the URL: keep only the kind of failure.
            raise WebhookUnavailable(f"no answer from the webhook ({type(exc).__name__})") from None
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise WebhookUnavailable(f"webhook answered {response.status_code} {response.reason_phrase}")
        if response.status_code >= 400:
            raise WebhookRejected(f"webhook answered {response.status_code} {response.reason_phrase}")

    return send


CLAIM_SQL = """
    update alerts set claimed_until = now() + %(lease)s, attempts = attempts + 1, last_attempt_at = now()
    where alert_id = (
        select alert_id from alerts
        where status = 'pending' and destination = %(destination)s
          and (claimed_until is null or claimed_until < now())
        order by created_at, alert_id
        limit 1
        for update skip locked
    )
    returning alert_id
"""

CONTENT_SQL = """
    select a.alert_id, p.name as project, a.agent_name, a.severity,
           coalesce(e.kind, an.anomaly_type, 'regression') as kind,
           e.event,
           coalesce(e.summary, an.explanation, r.explanation, '') as text,
           coalesce(e.at, an.session_started_at, r.session_started_at) as at,
           a.session_id, e.incident_id, e.affected_sessions, e.traffic_share, e.example_session_ids,
           coalesce(an.score, r.score) as score, i.first_seen
    from alerts a
    join projects p using (project_id)
    left join incident_events e on a.source = 'incident' and e.event_id = a.source_id
    left join incidents i on i.incident_id = e.incident_id
    left join anomalies an on a.source = 'anomaly' and an.anomaly_id = a.source_id
    left join regressions r on a.source = 'regression' and r.regression_id = a.source_id
    where a.alert_id = %s
"""


def _claim(conn: psycopg.Connection, destination: str) -> PendingAlert | None:
    """The destination's oldest pending alert, leased to this pass; no lock outlives this statement."""
    row = conn.execute(CLAIM_SQL, {"lease": LEASE, "destination": destination}).fetchone()
    if row is None:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        return PendingAlert(**cur.execute(CONTENT_SQL, (row[0],)).fetchone())


def delivery_paused(conn: psycopg.Connection, destination: str = DEFAULT_DESTINATION) -> str | None:
    """Why delivery to the destination is paused (None: it is not)."""
    row = conn.execute("select paused_at, reason from alert_delivery where destination = %s",
                       (destination,)).fetchone()
    return f"since {row[0]:%Y-%m-%d %H:%M} UTC: {row[1]}" if row and row[0] else None


def _pause(conn: psycopg.Connection, destination: str, reason: str) -> None:
    conn.execute("insert into alert_delivery (destination, paused_at, reason) values (%s, now(), %s)"
                 " on conflict (destination) do update set paused_at = now(), reason = excluded.reason",
                 (destination, reason))


def deliver_pending_alerts(conn: psycopg.Connection, send: Callable[[PendingAlert, dict], None],
                           destination: str = DEFAULT_DESTINATION, superset_url: str | None = None,
                           limit: int = 10_000) -> tuple[int, int]:
    """One pass over a destination's pending alerts with ``send(alert, payload)``; (delivered,
    failed). ``conn`` must be in autocommit mode: every statement commits at once."""
    delivered = failed = 0
    for _ in range(limit):
        alert = _claim(conn, destination)
        if alert is None:
            break
        payload = render(alert, superset_url)
        try:
            send(alert, payload)
        except WebhookRejected as exc:
            failed += 1
            conn.execute("update alerts set status = 'failed', claimed_until = null, last_error = %s"
                         " where alert_id = %s", (str(exc), alert.alert_id))
            _pause(conn, destination, str(exc))
            log.error("alert delivery to %s paused: %s (alert %s). Fix the webhook, then run "
                      "`bagula alerts requeue`.", destination, exc, alert.alert_id)
            break
        except Exception as exc:  # noqa: BLE001 - the alert stays pending for the next pass
            failed += 1
            message = str(exc) if isinstance(exc, WebhookUnavailable) else type(exc).__name__
            conn.execute("update alerts set claimed_until = null, last_error = %s where alert_id = %s",
                         (message, alert.alert_id))
            # Later alerts would most likely fail the same way: stop until the next pass.
            break
        delivered += 1
        conn.execute("update alerts set status = 'delivered', delivered_at = now(), claimed_until = null,"
                     " last_error = null, payload = %s where alert_id = %s", (Jsonb(payload), alert.alert_id))
    return delivered, failed


def pending_alert_count(conn: psycopg.Connection, destinations: list[str] | None = None) -> int:
    """Alerts waiting for delivery (to ``destinations``, or anywhere)."""
    if destinations is None:
        return conn.execute("select count(*) from alerts where status = 'pending'").fetchone()[0]
    return conn.execute("select count(*) from alerts where status = 'pending' and destination = any(%s)",
                        (destinations,)).fetchone()[0]


def requeue(conn: psycopg.Connection) -> int:
    """Resume delivery everywhere after a pause; failed alerts go back to pending. Returns how many."""
    with conn.transaction():
        count = conn.execute("update alerts set status = 'pending', claimed_until = null where status = 'failed'"
                             ).rowcount
        conn.execute("update alert_delivery set paused_at = null, reason = null")
    return count


def status(conn: psycopg.Connection) -> dict[str, Any]:
    counts = dict(conn.execute("select status, count(*) from alerts group by status").fetchall())
    paused = {d: f"since {at:%Y-%m-%d %H:%M} UTC: {reason}" for d, at, reason in conn.execute(
        "select destination, paused_at, reason from alert_delivery where paused_at is not null order by 1")}
    return {"pending": counts.get("pending", 0), "delivered": counts.get("delivered", 0),
            "failed": counts.get("failed", 0), "paused": paused}


def destinations(conn: psycopg.Connection, default_url: str | None) -> dict[str, str]:
    """destination -> webhook URL, for every destination with a URL."""
    found = {str(project): url for project, url in conn.execute("select project_id, webhook_url from alert_routes")}
    if default_url:
        found[DEFAULT_DESTINATION] = default_url
    return found


def deliver_alerts(conn: psycopg.Connection, settings: OrchestrationSettings) -> dict[str, Any]:
    """One delivery pass over every destination's pending alerts; what fails stays pending."""
    outcome: dict[str, Any] = {"delivered": 0, "failed": 0, "webhook": int(bool(settings.alert_webhook_url))}
    for destination, url in sorted(destinations(conn, settings.alert_webhook_url).items()):
        paused = delivery_paused(conn, destination)
        if paused:
            log.error("alert delivery to %s is paused %s; fix the webhook, then run `bagula alerts requeue`",
                      destination, paused)
            continue
        send = webhook_sender(url, settings.alert_timeout_s, settings.alert_attempts)
        delivered, failed = deliver_pending_alerts(conn, send, destination, settings.superset_public_url)
        outcome["delivered"] += delivered
        outcome["failed"] += failed
    paused = status(conn)["paused"]
    return {**outcome, "pending": pending_alert_count(conn),
            "paused": "; ".join(f"{d} {why}" for d, why in paused.items())}
