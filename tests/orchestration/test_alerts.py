"""Alert delivery under a misbehaving webhook: no lock or transaction is held while it is slow,
a webhook that refuses for good pauses delivery (visibly) instead of burning the backlog,
`bagula alerts requeue` resumes it, no secret lands in the database, and user-supplied names
cannot inject Slack markup."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from ingest_api import db
from ingest_api.store import keys
from orchestration.detection.alerts import deliver_alerts
from orchestration.settings import OrchestrationSettings
from tests.support.cli import bagula

HOSTILE_AGENT = "<!channel> & `ops`"


class Webhook:
    """A webhook that answers ``status`` and can hold a request until released."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[dict] = []
        self.hold = threading.Event()
        self.hold.set()
        self.holding = threading.Event()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.holding.set()
                webhook.hold.wait(30)
                if webhook.status == 200:
                    webhook.received.append(body)
                self.send_response(webhook.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0SECRET/B0SECRET/xoxSECRET"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def outbox(pg):
    """A database with three pending critical alerts for an agent with a hostile name."""
    url = pg.create_database(f"alerts_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    with psycopg.connect(url) as conn:
        project = keys.create_key(conn, "alerts-<b>team</b>").project_id
        for n in range(3):
            anomaly_id = conn.execute(
                "insert into anomalies (project_id, session_id, agent_name, anomaly_type, severity, details,"
                " session_started_at, score, explanation) values (%s, gen_random_uuid(), %s, 'cost_spike',"
                " 'critical', '{}', now(), 9.5, %s) returning anomaly_id",
                (project, HOSTILE_AGENT, f"cost per call 6x <http://evil.example|click here> #{n}")).fetchone()[0]
            conn.execute("insert into alerts (project_id, source, source_id, agent_name, session_id, severity)"
                         " select project_id, 'anomaly', anomaly_id, agent_name, session_id, severity"
                         " from anomalies where anomaly_id = %s", (anomaly_id,))
    return url


def deliver(url: str, webhook: Webhook) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        return deliver_alerts(conn, OrchestrationSettings(alert_webhook_url=webhook.url, alert_attempts=1))


def test_no_transaction_is_open_while_the_webhook_takes_its_time(outbox):
    webhook = Webhook()
    webhook.hold.clear()
    delivering = threading.Thread(target=deliver, args=(outbox, webhook))
    delivering.start()
    assert webhook.holding.wait(30)
    with psycopg.connect(outbox) as conn:
        open_transactions = conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
            " and (xact_start is not null or backend_xid is not null)").fetchone()[0]
    webhook.hold.set()
    delivering.join(60)
    assert open_transactions == 0
    assert len(webhook.received) == 3


def test_a_webhook_that_refuses_pauses_delivery_until_requeued(outbox):
    webhook = Webhook()
    webhook.status = 404
    first = deliver(outbox, webhook)
    assert first["failed"] == 1 and first["delivered"] == 0 and "webhook answered 404" in first["paused"]
    with psycopg.connect(outbox) as conn:
        states = dict(conn.execute("select status, count(*) from alerts group by 1").fetchall())
        errors = [r[0] for r in conn.execute("select last_error from alerts where last_error is not null")]
        stored = conn.execute("select string_agg(coalesce(last_error, '') || coalesce(payload::text, ''), ' ')"
                              " from alerts").fetchone()[0] or ""
    assert states == {"failed": 1, "pending": 2}, "one alert refused, the backlog kept"
    assert errors == ["webhook answered 404 Not Found"]
    assert "SECRET" not in stored and "127.0.0.1" not in stored

    webhook.status = 200  # fixed, but delivery stays paused until an operator says so
    assert deliver(outbox, webhook)["delivered"] == 0 and not webhook.received
    status = bagula(outbox, "alerts", "status")
    assert "delivery to default paused" in status.stdout and "404" in status.stdout

    requeued = bagula(outbox, "alerts", "requeue")
    assert requeued.returncode == 0 and "1 failed alert(s) pending again" in requeued.stdout
    resumed = deliver(outbox, webhook)
    assert resumed["delivered"] == 3 and resumed["pending"] == 0 and not resumed["paused"]
    assert "delivery running" in bagula(outbox, "alerts", "status").stdout


def test_names_and_explanations_cannot_inject_slack_markup(outbox):
    webhook = Webhook()
    deliver(outbox, webhook)
    [message, *_] = webhook.received
    text = json.dumps(message)
    assert "<!channel>" not in text and "<http://evil.example|click here>" not in text
    section = message["blocks"][0]["text"]["text"]
    assert "`&lt;!channel&gt; &amp; 'ops'`" in section
    assert "&lt;http://evil.example|click here&gt;" in section
    assert "alerts-&lt;b&gt;team&lt;/b&gt;" in message["blocks"][1]["elements"][0]["text"]
