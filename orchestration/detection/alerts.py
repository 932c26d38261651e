"""Delivering the alert outbox to a Slack-compatible webhook, each alert exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from orchestration.settings import OrchestrationSettings


@dataclass(frozen=True)
class PendingAlert:
    alert_id: uuid.UUID
    payload: dict[str, Any]
    attempts: int


def deliver_pending_alerts(conn: psycopg.Connection, send: Any, limit: int = 10_000) -> tuple[int, int]:
    """Send pending alerts one at a time with ``send(alert) -> None`` (raises on failure).

    Each alert is locked (SKIP LOCKED: concurrent runs never send the same one),
    sent, and marked in its own transaction, so a crash repeats at most the one
    alert in flight and loses none. Returns (delivered, failed)."""
    delivered = failed = 0
    for _ in range(limit):
        with conn.transaction():
            row = conn.execute(
                """
                select alert_id, payload, attempts from alerts
                where status = 'pending'
                order by created_at, alert_id
                limit 1
                for update skip locked
                """
            ).fetchone()
            if row is None:
                break
            alert = PendingAlert(*row)
            try:
                send(alert)
            except Exception as exc:  # noqa: BLE001 - a failure leaves the alert pending for the next pass
                failed += 1
                status = "failed" if getattr(exc, "permanent", False) else "pending"
                conn.execute(
                    "update alerts set attempts = attempts + 1, last_error = %s, last_attempt_at = now(),"
                    " status = %s where alert_id = %s",
                    (str(exc)[:500] or type(exc).__name__, status, alert.alert_id),
                )
                # Later alerts would most likely fail the same way: stop until the next pass.
                break
            delivered += 1
            conn.execute(
                "update alerts set status = 'delivered', attempts = attempts + 1, delivered_at = now(),"
                " last_attempt_at = now(), last_error = null where alert_id = %s",
                (alert.alert_id,),
            )
    return delivered, failed


def pending_alert_count(conn: psycopg.Connection) -> int:
    return conn.execute("select count(*) from alerts where status = 'pending'").fetchone()[0]



class WebhookRejected(Exception):
    """The receiver refused the alert for good (4xx other than 408/429): retrying won't help."""

    permanent = True


def _retryable(exc: BaseException) -> bool:
    return not isinstance(exc, WebhookRejected)


def webhook_sender(url: str, timeout_s: float, attempts: int) -> Callable[[PendingAlert], None]:
    client = httpx.Client(timeout=timeout_s)

    @retry(stop=stop_after_attempt(attempts), wait=wait_exponential_jitter(initial=0.5, max=8),
           retry=retry_if_exception(_retryable), reraise=True)
    def send(alert: PendingAlert) -> None:
        # The alert id lets a receiver drop the rare repeat (a crash between sending and recording).
        response = client.post(url, json=alert.payload, headers={"X-Bagula-Alert-Id": str(alert.alert_id)})
        if response.status_code in (408, 429) or response.status_code >= 500:
            response.raise_for_status()
        if response.status_code >= 400:
            raise WebhookRejected(f"webhook answered {response.status_code}: {response.text[:200]}")

    return send


def deliver_alerts(conn: psycopg.Connection, settings: OrchestrationSettings) -> dict[str, int]:
    """One delivery pass over the pending alerts; what fails stays pending for the next pass."""
    if not settings.alert_webhook_url:
        return {"delivered": 0, "failed": 0, "pending": pending_alert_count(conn), "webhook": 0}
    send = webhook_sender(settings.alert_webhook_url, settings.alert_timeout_s, settings.alert_attempts)
    delivered, failed = deliver_pending_alerts(conn, send)
    return {"delivered": delivered, "failed": failed, "pending": pending_alert_count(conn), "webhook": 1}
