"""Delivering the alert outbox to a Slack-compatible webhook, each alert exactly once.

One pass takes pending alerts oldest first. Each is *claimed* with a short statement (a lease
in ``claimed_until``: a pass that crashes leaves it to the next one once the lease runs out),
then sent with no transaction or lock open while the webhook is slow, then marked delivered.
A crash between the receiver's answer and the mark repeats that one alert: the header
``X-Bagula-Alert-Id`` lets a receiver drop the repeat. A webhook that is down or answers 408,
429 or 5xx leaves the alert pending for the next pass. One that refuses an alert for good (any
other 4xx: a wrong URL, a revoked hook) pauses delivery instead of burning the backlog: the
alert is marked failed, ``alert_delivery`` records why, passes log it and skip, and
``bagula alerts requeue`` (after fixing the webhook) resumes and resends the failed ones.
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

from orchestration.settings import OrchestrationSettings

log = logging.getLogger("bagula.alerts")

# Longer than one alert's attempts can take (attempts x (timeout + backoff)).
LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class PendingAlert:
    alert_id: uuid.UUID
    project: str
    agent_name: str
    session_id: uuid.UUID
    severity: str
    verdict_type: str
    explanation: str
    score: float | None
    session_started_at: datetime | None


def _mrkdwn(text: Any) -> str:
    """User-supplied text made inert in Slack mrkdwn: &, < and > are its only escapes."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: Any) -> str:
    """Text inside `code`, which a backtick would close."""
    return _mrkdwn(text).replace("`", "'")


def render(alert: PendingAlert) -> dict[str, Any]:
    """The Slack-compatible message (``text`` for notifications, ``blocks`` for display)."""
    severity, kind = alert.severity.upper(), alert.verdict_type
    score = f"{alert.score:.3f}" if alert.score is not None else "n/a"
    started = alert.session_started_at.isoformat() if alert.session_started_at else "unknown"
    return {
        "text": f":rotating_light: [{severity}] {kind} on {_mrkdwn(alert.agent_name)}: "
                f"{_mrkdwn(alert.explanation)} (session {alert.session_id})",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*[{severity}] {kind}* on "
                                                                  f"`{_code(alert.agent_name)}`\n"
                                                                  f"{_mrkdwn(alert.explanation)}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": (
                f"session `{alert.session_id}` started {started} · project {_mrkdwn(alert.project)} · "
                f"score {score}")}]},
        ],
    }


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
        where status = 'pending' and (claimed_until is null or claimed_until < now())
        order by created_at, alert_id
        limit 1
        for update skip locked
    )
    returning alert_id
"""

CONTENT_SQL = """
    select a.alert_id, p.name as project, a.agent_name, a.session_id, a.severity,
           coalesce(an.anomaly_type, 'regression') as verdict_type,
           coalesce(an.explanation, r.explanation, '') as explanation,
           coalesce(an.score, r.score) as score,
           coalesce(an.session_started_at, r.session_started_at) as session_started_at
    from alerts a
    join projects p using (project_id)
    left join anomalies an on a.source = 'anomaly' and an.anomaly_id = a.source_id
    left join regressions r on a.source = 'regression' and r.regression_id = a.source_id
    where a.alert_id = %s
"""


def _claim(conn: psycopg.Connection) -> PendingAlert | None:
    """The oldest pending alert, leased to this pass; no lock outlives this statement."""
    row = conn.execute(CLAIM_SQL, {"lease": LEASE}).fetchone()
    if row is None:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        return PendingAlert(**cur.execute(CONTENT_SQL, (row[0],)).fetchone())


def delivery_paused(conn: psycopg.Connection) -> str | None:
    """Why delivery is paused (None: it is not)."""
    row = conn.execute("select paused_at, reason from alert_delivery").fetchone()
    return f"since {row[0]:%Y-%m-%d %H:%M} UTC: {row[1]}" if row and row[0] else None


def deliver_pending_alerts(conn: psycopg.Connection, send: Callable[[PendingAlert, dict], None],
                           limit: int = 10_000) -> tuple[int, int]:
    """One pass over the pending alerts with ``send(alert, payload)``; (delivered, failed).
    ``conn`` must be in autocommit mode: every statement commits at once."""
    delivered = failed = 0
    for _ in range(limit):
        alert = _claim(conn)
        if alert is None:
            break
        payload = render(alert)
        try:
            send(alert, payload)
        except WebhookRejected as exc:
            failed += 1
            conn.execute("update alerts set status = 'failed', claimed_until = null, last_error = %s"
                         " where alert_id = %s", (str(exc), alert.alert_id))
            conn.execute("update alert_delivery set paused_at = now(), reason = %s", (str(exc),))
            log.error("alert delivery paused: %s (alert %s). Fix the webhook, then run `bagula alerts requeue`.",
                      exc, alert.alert_id)
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


def pending_alert_count(conn: psycopg.Connection) -> int:
    return conn.execute("select count(*) from alerts where status = 'pending'").fetchone()[0]


def requeue(conn: psycopg.Connection) -> int:
    """Resume delivery after a pause; failed alerts go back to pending. Returns how many."""
    with conn.transaction():
        count = conn.execute("update alerts set status = 'pending', claimed_until = null where status = 'failed'"
                             ).rowcount
        conn.execute("update alert_delivery set paused_at = null, reason = null")
    return count


def status(conn: psycopg.Connection) -> dict[str, Any]:
    counts = dict(conn.execute("select status, count(*) from alerts group by status").fetchall())
    return {"pending": counts.get("pending", 0), "delivered": counts.get("delivered", 0),
            "failed": counts.get("failed", 0), "paused": delivery_paused(conn)}


def deliver_alerts(conn: psycopg.Connection, settings: OrchestrationSettings) -> dict[str, Any]:
    """One delivery pass over the pending alerts; what fails stays pending for the next pass."""
    outcome: dict[str, Any] = {"delivered": 0, "failed": 0, "webhook": int(bool(settings.alert_webhook_url))}
    paused = delivery_paused(conn)
    if settings.alert_webhook_url and paused:
        log.error("alert delivery is paused %s; fix the webhook, then run `bagula alerts requeue`", paused)
    elif settings.alert_webhook_url:
        send = webhook_sender(settings.alert_webhook_url, settings.alert_timeout_s, settings.alert_attempts)
        outcome["delivered"], outcome["failed"] = deliver_pending_alerts(conn, send)
    return {**outcome, "pending": pending_alert_count(conn), "paused": delivery_paused(conn) or ""}
