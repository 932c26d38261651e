"""Delivering critical verdicts to a Slack-compatible webhook, each exactly once."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import psycopg
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ingest_api.settings import Settings
from ingest_api.store import detection as store


class WebhookRejected(Exception):
    """The receiver refused the alert for good (4xx other than 408/429): retrying won't help."""

    permanent = True


def _retryable(exc: BaseException) -> bool:
    return not isinstance(exc, WebhookRejected)


def webhook_sender(url: str, timeout_s: float, attempts: int) -> Callable[[store.PendingAlert], None]:
    client = httpx.Client(timeout=timeout_s)

    @retry(stop=stop_after_attempt(attempts), wait=wait_exponential_jitter(initial=0.5, max=8),
           retry=retry_if_exception(_retryable), reraise=True)
    def send(alert: store.PendingAlert) -> None:
        # The alert id lets a receiver drop the rare repeat (a crash between sending and recording).
        response = client.post(url, json=alert.payload, headers={"X-Bagula-Alert-Id": str(alert.alert_id)})
        if response.status_code in (408, 429) or response.status_code >= 500:
            response.raise_for_status()
        if response.status_code >= 400:
            raise WebhookRejected(f"webhook answered {response.status_code}: {response.text[:200]}")

    return send


def deliver_alerts(conn: psycopg.Connection, settings: Settings) -> dict[str, int]:
    """One delivery pass over the pending alerts; what fails stays pending for the next pass."""
    if not settings.alert_webhook_url:
        return {"delivered": 0, "failed": 0, "pending": store.pending_alert_count(conn), "webhook": 0}
    send = webhook_sender(settings.alert_webhook_url, settings.alert_timeout_s, settings.alert_attempts)
    delivered, failed = store.deliver_pending_alerts(conn, send)
    return {"delivered": delivered, "failed": failed, "pending": store.pending_alert_count(conn), "webhook": 1}
