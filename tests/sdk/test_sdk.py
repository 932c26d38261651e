"""The Python client against the real ingest API: nothing lost, nothing twice, never in the agent's way.

Timing is never guessed: a test waits for the event it needs (the proxy has seen a request, the
client has counted a retry, the API has stored a row) rather than sleeping and hoping."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from bagula_client import BagulaClient, redact
from tests.support.sdk import Fault, FaultyProxy, SilentServer, record_session
from tests.support.services import ApiServer, new_tenant, wait_for

ROOT = Path(__file__).resolve().parents[2]
FAST = {"flush_interval": 0.2, "initial_backoff": 0.05, "max_backoff": 0.5}


def stored_ids(database_url: str, project_id) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select session_id::text from agent_sessions where project_id = %s", (project_id,)
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def own_api(database_url):
    """An API server this test may stop and restart."""
    server = ApiServer(database_url, BAGULA_API_WORKERS="1").start()
    yield server
    server.stop()


def test_every_session_arrives_once_while_the_api_restarts_mid_stream(own_api, database_url):
    tenant = new_tenant(own_api, database_url)
    client = BagulaClient(tenant.key, own_api.base_url, batch_size=10, **FAST)
    tracker = client.get_session_tracker()
    sent = [record_session(tracker, n) for n in range(60)]
    assert client.flush(timeout=30)
    own_api.stop()
    sent += [record_session(tracker, n) for n in range(60, 140)]  # produced while the API is down
    wait_for(lambda: client.stats()["retried"] >= 3, timeout=30)  # the client has met the outage
    own_api.start()
    sent += [record_session(tracker, n) for n in range(140, 200)]

    assert client.flush(timeout=60)
    stats = client.stats()
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent)
    assert stats["sent"] == 200 and stats["dropped"] == {}
    client.close()


def test_503_and_429_are_retried_after_retry_after(api, database_url):
    tenant = new_tenant(api, database_url)

    def plan(request) -> Fault | None:
        if request.number % 3 == 1:
            return Fault(status=503, retry_after="0")
        if request.number % 3 == 2:
            return Fault(status=429, retry_after="1")
        return None

    with FaultyProxy(api.base_url, plan) as proxy:
        client = BagulaClient(tenant.key, proxy.url, batch_size=5, **FAST)
        tracker = client.get_session_tracker()
        sent = [record_session(tracker, n) for n in range(10)]
        started = time.monotonic()
        assert client.flush(timeout=60)
        elapsed = time.monotonic() - started

    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent)
    stats = client.stats()
    # Every batch met a 503 then a 429, each answered by a retry of that same batch.
    assert stats["retried"] == proxy.faults == 2 * stats["batches"]
    assert [r.session_ids for r in proxy.log[0:3]] == [proxy.log[0].session_ids] * 3
    # Each 429 asked for a one-second pause, and the client waited it out.
    assert elapsed >= stats["batches"] * 1.0
    client.close()


def test_slow_responses_time_out_and_the_resend_is_not_stored_twice(api, database_url):
    tenant = new_tenant(api, database_url)
    plan = lambda request: Fault(delay=1.5) if request.number % 2 == 1 else None  # noqa: E731
    with FaultyProxy(api.base_url, plan) as proxy:
        client = BagulaClient(tenant.key, proxy.url, batch_size=10, request_timeout=0.5, **FAST)
        tracker = client.get_session_tracker()
        sent = [record_session(tracker, n) for n in range(30)]
        assert client.flush(timeout=60)
        proxy.wait_until_idle()  # the timed-out requests, forwarded late, have been answered too

    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent)
    stats = client.stats()
    assert stats["retried"] == stats["batches"] and stats["sent"] == 30
    # The late copies reached the API and were counted as duplicates there, not stored.
    assert sum(1 for r in proxy.log if r.status == 200) == 2 * stats["batches"]
    client.close()


def test_client_errors_are_not_retried_and_rejected_sessions_are_counted(api, database_url):
    tenant = new_tenant(api, database_url)
    client = BagulaClient(tenant.key, api.base_url, batch_size=100, **FAST)
    tracker = client.get_session_tracker()
    good = [record_session(tracker, n) for n in range(4)]
    record_session(tracker, 99, user_satisfaction=9)  # out of the 1-5 scale: a 207
    assert client.flush(timeout=30)
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(good)
    stats = client.stats()
    assert (stats["sent"], stats["rejected"], stats["retried"]) == (4, 1, 0)

    record_session(tracker, 100, user_satisfaction=0)  # alone in its batch: a 422, nothing stored
    assert client.flush(timeout=30)
    stats = client.stats()
    assert (stats["sent"], stats["rejected"], stats["retried"], stats["dropped"]) == (4, 2, 0, {})

    with FaultyProxy(api.base_url, lambda request: Fault(status=400)) as proxy:
        refused = BagulaClient(tenant.key, proxy.url, batch_size=100, **FAST)
        record_session(refused.get_session_tracker(), 1)
        assert refused.flush(timeout=30)
        assert proxy.requests == 1
    assert refused.stats()["dropped"] == {"client_error": 1}
    assert refused.stats()["retried"] == 0
    for c in (client, refused):
        c.close()


def test_413_splits_the_batch_until_the_parts_fit(api, database_url):
    tenant = new_tenant(api, database_url)
    # The proxy plays a server whose limit is 3 sessions a request.
    with FaultyProxy(api.base_url, lambda r: Fault(status=413) if len(r.session_ids) > 3 else None) as proxy:
        client = BagulaClient(tenant.key, proxy.url, batch_size=10, **FAST)
        tracker = client.get_session_tracker()
        sent = [record_session(tracker, n) for n in range(10)]
        assert client.flush(timeout=30)
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent)
    # 10 -> 5 + 5 -> (2 + 3) + (2 + 3): three refusals, four deliveries, in the sessions' order.
    assert [len(r.session_ids) for r in proxy.log] == [10, 5, 2, 3, 5, 2, 3]
    assert [sid for r in proxy.log if r.status == 200 for sid in r.session_ids] == sent
    assert client.stats()["retried"] == 0 and client.stats()["dropped"] == {}
    client.close()


def test_a_batch_the_api_keeps_failing_goes_to_the_back_and_only_its_culprit_is_dropped(api, database_url):
    tenant = new_tenant(api, database_url)
    first_request_may_answer = threading.Event()
    poison: list[str] = []

    def plan(request) -> Fault | None:
        # The API fails on any batch holding the poison session; the first request waits until
        # every session has been recorded, so what is queued behind it is known.
        hold = first_request_may_answer if request.number == 1 else None
        if poison[0] in request.session_ids:
            return Fault(status=500, hold=hold)
        return Fault(hold=hold) if hold else None

    with FaultyProxy(api.base_url, plan) as proxy:
        client = BagulaClient(tenant.key, proxy.url, batch_size=10, server_error_attempts=2, **FAST)
        tracker = client.get_session_tracker()
        first = [record_session(tracker, n) for n in range(3)]
        poison.append(record_session(tracker, 3))
        first += [record_session(tracker, n) for n in range(4, 10)]
        wait_for(lambda: proxy.requests == 1)
        newer = [record_session(tracker, n) for n in range(10, 30)]
        first_request_may_answer.set()
        assert client.flush(timeout=60)

    stored = sorted(stored_ids(database_url, tenant.project_id))
    assert stored == sorted(first + newer)
    assert client.stats()["dropped"] == {"server_error": 1}
    log = proxy.log
    last_poison_attempt = max(r.number for r in log if poison[0] in r.session_ids)
    newer_delivered = [r.number for r in log if r.status == 200 and set(r.session_ids) & set(newer)]
    # The newer sessions went out while the failing batch waited at the back of the queue...
    assert max(newer_delivered) < last_poison_attempt
    # ...and was halved, two tries each time, until the poison session (the 4th) was alone.
    assert [len(r.session_ids) for r in log if poison[0] in r.session_ids] == [10, 10, 5, 5, 3, 3, 2, 2, 1, 1]
    client.close()


def test_a_session_that_cannot_be_encoded_is_dropped_alone(api, database_url, tenant):
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text for this object")

    circular: dict = {"name": "loop"}
    circular["self"] = circular
    client = BagulaClient(tenant.key, api.base_url, batch_size=50, **FAST)
    tracker = client.get_session_tracker()
    good = [record_session(tracker, n) for n in range(5)]
    tuple_key = record_session(tracker, 5, metadata={("region", 1): "eu", "nan": float("nan")})
    loop = record_session(tracker, 6, metadata=circular)
    record_session(tracker, 7, metadata={"obj": Unprintable()})
    good += [record_session(tracker, n) for n in range(8, 12)]
    assert client.flush(timeout=30)

    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(good + [tuple_key, loop])
    assert client.stats()["dropped"] == {"unencodable": 1}
    assert tenant.client.get(f"/v1/sessions/{tuple_key}").json()["metadata"] == {"('region', 1)": "eu", "nan": None}
    assert tenant.client.get(f"/v1/sessions/{loop}").json()["metadata"] == {"name": "loop", "self": "[Circular]"}
    client.close()


def read_session(tenant, session_id: str) -> dict:
    return tenant.client.get(f"/v1/sessions/{session_id}").json()


def test_a_session_never_completed_is_sent_as_abandoned_after_the_session_timeout(api, database_url, tenant):
    client = BagulaClient(tenant.key, api.base_url, batch_size=50, session_timeout=0.3, **FAST)
    tracker = client.get_session_tracker()
    sid = tracker.start_session("abandon-agent", "help me", user_id="u-1")
    turn = tracker.start_turn(sid, "help me")
    tracker.record_llm_call(sid, turn, provider="openai", model="gpt-4o", start_time=time.time() * 1000 - 50,
                            end_time=time.time() * 1000)
    finished = record_session(tracker, 1)
    # Nobody flushes: the sender's own sweep finds the session past its timeout and sends it.
    wait_for(lambda: sid in stored_ids(database_url, tenant.project_id), timeout=30)

    session = read_session(tenant, sid)
    assert session["finalOutcome"]["status"] == "abandoned"
    assert session["endTime"] == session["turns"][0]["llmCalls"][0]["endTime"]  # its last activity
    assert tracker.complete_session(sid, "success") is False  # too late: already sent
    assert client.flush(timeout=30)
    assert finished in stored_ids(database_url, tenant.project_id)
    stats = client.stats()
    assert (stats["abandoned"], stats["open"], stats["sent"]) == (1, 0, 2)
    client.close()


def test_open_sessions_are_bounded_and_sent_as_abandoned_at_close(api, database_url, tenant):
    client = BagulaClient(tenant.key, api.base_url, batch_size=50, max_open_sessions=3, **FAST)
    tracker = client.get_session_tracker()
    opened = [tracker.start_session("busy-agent", f"request {n}") for n in range(5)]
    assert client.stats()["open"] == 3  # the two oldest were sent as abandoned to make room
    assert client.flush(timeout=30)
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(opened[:2])

    assert client.close() is True  # the three still open leave as abandoned, and are delivered
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(opened)
    assert {read_session(tenant, sid)["finalOutcome"]["status"] for sid in opened} == {"abandoned"}
    assert client.stats()["abandoned"] == 5


SECRETS = ["alice@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "sk-proj-abcdefghijklmnopqrstuvwx123",
           "555-123-4567"]


def test_redacted_values_never_reach_the_database(api, database_url, tenant):
    client = BagulaClient(tenant.key, api.base_url, batch_size=50, redact=redact.pii, **FAST)
    tracker = client.get_session_tracker()
    messages = [{"role": "user", "content": f"I am {SECRETS[0]}, call {SECRETS[1]}"}]
    sid = tracker.start_session("billing-agent", f"charge {SECRETS[2]}", metadata={"contact": SECRETS[0]})
    turn = tracker.start_turn(sid, {"type": "user_message", "content": messages[0]["content"]})
    tracker.record_llm_call(sid, turn, provider="openai", model="gpt-4o", start_time=time.time() * 1000 - 5,
                            end_time=time.time() * 1000, messages=messages,
                            response={"content": f"key {SECRETS[3]} used"})
    tracker.record_agent_response(sid, turn, message=f"charged {SECRETS[2]}", tool_calls=[
        {"tool_name": "charge", "arguments": {"card": SECRETS[2]}, "result": {"to": SECRETS[0]},
         "error": f"call {SECRETS[4]}"}])
    tracker.record_user_feedback(sid, turn, f"mail {SECRETS[0]}")
    tracker.complete_session(sid, "success", result=f"receipt to {SECRETS[0]}")
    assert client.flush(timeout=30)

    with psycopg.connect(database_url) as conn:
        for table in ("agent_sessions", "session_turns", "llm_calls", "tool_calls"):
            rows = conn.execute(f"select t::text from {table} t where project_id = %s", (tenant.project_id,)).fetchall()
            assert rows, table
            for (row,) in rows:
                assert not [s for s in SECRETS if s in row], (table, row)
    session = read_session(tenant, sid)
    assert session["initialRequest"] == "charge [REDACTED:card]"
    assert session["turns"][0]["agentResponse"]["toolCalls"][0]["error"] == "call [REDACTED:phone]"
    assert messages[0]["content"].startswith("I am alice@")  # the agent's own objects are untouched
    client.close()


def test_a_redaction_hook_that_fails_drops_its_session_rather_than_send_it_unredacted(api, database_url, tenant):
    def picky(value, field):
        if "secret" in str(value):
            raise ValueError("cannot redact this")
        return value

    client = BagulaClient(tenant.key, api.base_url, batch_size=50, redact=picky, **FAST)
    tracker = client.get_session_tracker()
    kept = record_session(tracker, 1)
    tracker.complete_session(tracker.start_session("a", "a secret request"), "success")
    assert client.flush(timeout=30)
    assert stored_ids(database_url, tenant.project_id) == [kept]
    assert client.stats()["dropped"] == {"redaction_error": 1}
    client.close()


def test_bad_key_is_a_client_error_not_a_retry_loop(api):
    client = BagulaClient("bgl_wrong", api.base_url, batch_size=1, **FAST)
    record_session(client.get_session_tracker(), 1)
    assert client.flush(timeout=30)
    assert client.stats()["dropped"] == {"client_error": 1}
    client.close()


def test_queue_is_bounded_when_the_api_never_answers():
    with SilentServer() as silent:
        client = BagulaClient("bgl_x", silent.url, batch_size=50, max_queue_size=100, request_timeout=30, **FAST)
        tracker = client.get_session_tracker()
        started = time.perf_counter()
        for n in range(1000):
            record_session(tracker, n)
        elapsed = time.perf_counter() - started
        stats = client.stats()
        # At most a full queue plus the one batch in flight (hanging); every other session was
        # refused at the door and counted.
        assert stats["queued"] <= 100 + 50
        assert stats["dropped"] == {"queue_full": 1000 - stats["queued"]}
        assert elapsed < 2.0  # the agent never waited on the network
        closed_at = time.monotonic()
        assert client.close(timeout=0.5) is False
        assert time.monotonic() - closed_at < 2.5
        # Everything accepted and not delivered is accounted for, exactly once.
        assert client.stats()["dropped"] == {"queue_full": 1000 - stats["queued"], "shutdown": stats["queued"]}
        assert client.stats()["queued"] == 0


def _run_script(code: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **env},
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


def test_pending_sessions_are_flushed_at_interpreter_exit(api, database_url, tenant):
    result = _run_script(
        """
        from bagula_client import BagulaClient
        from tests.support.sdk import record_session
        client = BagulaClient(batch_size=1000, flush_interval=3600)   # would never send by itself
        tracker = client.get_session_tracker()
        ids = [record_session(tracker, n) for n in range(25)]
        ids.append(tracker.start_session("exit-agent", "still open at exit"))
        print(",".join(ids))
        """,
        {"BAGULA_API_KEY": tenant.key, "BAGULA_ENDPOINT": api.base_url},
    )
    assert result.returncode == 0, result.stderr
    sent = result.stdout.strip().split(",")
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent)
    assert read_session(tenant, sent[-1])["finalOutcome"]["status"] == "abandoned"


SIGTERM_SCRIPT = """
    import signal, sys, threading
    from bagula_client import BagulaClient
    from tests.support.sdk import record_session
    if sys.argv[1] == "own-handler":   # an application that shuts down by itself on SIGTERM
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    client = BagulaClient(batch_size=1000, flush_interval=3600)
    tracker = client.get_session_tracker()
    ids = [record_session(tracker, n) for n in range(20)] + [tracker.start_session("a", "open at SIGTERM")]
    print(",".join(ids), flush=True)
    threading.Event().wait(120)
    """


@pytest.mark.parametrize("host, exit_code", [("no-handler", -signal.SIGTERM), ("own-handler", 0)])
def test_pending_sessions_are_flushed_on_sigterm(api, database_url, tenant, host, exit_code):
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SIGTERM_SCRIPT), host], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BAGULA_API_KEY": tenant.key, "BAGULA_ENDPOINT": api.base_url},
    )
    sent = process.stdout.readline().strip().split(",")  # the sessions are queued, none sent
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == exit_code, process.stderr.read()
    # Without a handler of its own the process still dies of the signal, after the flush; with
    # one, its normal exit runs the atexit flush.
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent)
    assert read_session(tenant, sent[-1])["finalOutcome"]["status"] == "abandoned"


def test_exit_waits_no_longer_than_the_shutdown_timeout_when_the_api_hangs():
    with SilentServer() as silent:
        started = time.monotonic()
        result = _run_script(
            """
            from bagula_client import BagulaClient
            from tests.support.sdk import record_session
            client = BagulaClient("bgl_x", batch_size=5, flush_interval=0.1, request_timeout=60,
                                  shutdown_timeout=1.0)
            for n in range(20):
                record_session(client.get_session_tracker(), n)
            """,
            {"BAGULA_ENDPOINT": silent.url},
        )
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 8  # 1 s of shutdown wait, beside interpreter start-up
        assert "20 sessions not delivered" in result.stderr


def test_threads_and_asyncio_tasks_record_concurrently(api, database_url):
    tenant = new_tenant(api, database_url)
    client = BagulaClient(tenant.key, api.base_url, batch_size=25, **FAST)
    tracker = client.get_session_tracker()
    sent: list[str] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        ids = [record_session(tracker, offset + n) for n in range(40)]
        with lock:
            sent.extend(ids)

    threads = [threading.Thread(target=worker, args=(i * 1000,)) for i in range(6)]
    for t in threads:
        t.start()

    async def agent_task(n: int) -> str:
        await asyncio.sleep(0.001 * (n % 5))
        return record_session(tracker, 10_000 + n)

    async def main() -> list[str]:
        ids = await asyncio.gather(*(agent_task(n) for n in range(60)))
        assert await client.aflush(timeout=60)
        return list(ids)

    async_ids = asyncio.run(main())
    for t in threads:
        t.join()
    assert client.flush(timeout=60)
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent + async_ids)
    assert client.stats()["sent"] == 300
    client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_sends_its_own_sessions_and_not_its_parents(api, database_url):
    tenant = new_tenant(api, database_url)
    client = BagulaClient(tenant.key, api.base_url, batch_size=1000, flush_interval=3600)
    tracker = client.get_session_tracker()
    parent_ids = [record_session(tracker, n) for n in range(5)]  # queued, not yet sent
    still_open = tracker.start_session("fork-agent", "open across the fork")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            ids = [record_session(tracker, 100 + n) for n in range(3)]
            ok = client.flush(timeout=30) and client.stats()["sent"] == 3 and client.stats()["open"] == 0
            os.write(write_end, (",".join(ids) if ok else "FAIL").encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child_report = os.read(read_end, 10_000).decode()
    os.close(read_end)
    assert child_report != "FAIL"
    tracker.complete_session(still_open, "success")  # the parent still owns its open session
    assert client.flush(timeout=30)
    assert client.stats()["duplicates"] == 0  # the child did not send the parent's sessions
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(
        parent_ids + [still_open] + child_report.split(","))
    client.close()


def test_context_managers_time_calls_and_record_failures(api, database_url, tenant):
    client = BagulaClient(tenant.key, api.base_url, batch_size=100, **FAST)
    tracker = client.get_session_tracker()

    with tracker.session("cm-agent", "find order 42", user_id="u1") as ok:
        with ok.turn({"type": "user_message", "content": "where is 42?"}) as turn:
            with turn.llm_call("anthropic", "claude-sonnet-4", messages=[{"role": "user"}]) as call:
                time.sleep(0.02)
                call.response = {"content": "looking"}
                call.usage(tokens_input=50, tokens_output=10, cost_usd=0.0004)
            with pytest.raises(TimeoutError):
                with turn.tool_call("search_orders", {"id": 42}):
                    raise TimeoutError("upstream slow")
            with turn.tool_call("get_customer", {"id": 7}) as tool:
                tool.result = {"name": "Ada"}
            turn.message = "Order 42 ships tomorrow"
        ok.feedback(turn.turn_id, {"thumbs": "up"})
        ok.complete("success", user_satisfaction=4, confidence=0.8)

    with pytest.raises(ValueError):
        with tracker.session("cm-agent", "explode") as failing:
            with failing.turn("go"):
                raise ValueError("model returned garbage")

    assert client.flush(timeout=30)
    read = read_session(tenant, ok.session_id)
    [turn_read] = read["turns"]
    [llm] = turn_read["llmCalls"]
    assert llm["metrics"]["tokensTotal"] == 60 and llm["metrics"]["latencyMs"] >= 20
    tools = turn_read["agentResponse"]["toolCalls"]
    assert [(t["toolId"], t["toolName"]) for t in tools] == [("turn-1-tool-1", "search_orders"),
                                                              ("turn-1-tool-2", "get_customer")]
    assert tools[0]["error"] == "TimeoutError: upstream slow" and tools[1]["result"] == {"name": "Ada"}
    assert turn_read["agentResponse"]["message"] == "Order 42 ships tomorrow"
    assert turn_read["userFeedback"] == {"thumbs": "up"}
    assert read["finalOutcome"] == {"status": "success", "result": None, "userSatisfaction": 4, "confidence": 0.8}

    failed = read_session(tenant, failing.session_id)
    assert failed["finalOutcome"]["status"] == "error"
    assert failed["finalOutcome"]["result"] == "ValueError: model returned garbage"
    client.close()


def test_misuse_is_logged_not_raised_into_the_agent(caplog):
    client = BagulaClient("bgl_x", "http://127.0.0.1:9", **FAST)
    tracker = client.get_session_tracker()
    assert tracker.start_turn("no-such-session", "x")  # still returns an id
    tracker.record_llm_call("no-such-session", "t", provider="p", model="m", start_time=1, end_time=2)
    tracker.record_agent_response("no-such-session", "t", tool_calls=[object()])
    assert tracker.complete_session("no-such-session", "success") is False
    assert "unknown" in caplog.text
    client.close(timeout=0)


def test_client_uses_only_the_standard_library():
    code = textwrap.dedent(
        """
        import sys
        sys.path = [p for p in sys.path if "site-packages" not in p and "dist-packages" not in p]
        sys.path.insert(0, "sdk/python")
        import bagula_client
        from bagula_client import BagulaClient, redact
        c = BagulaClient("k", "http://127.0.0.1:9", redact=redact.pii)
        c.get_session_tracker().start_session("a", "r")
        c.close(timeout=0)
        foreign = [m for m in sys.modules if m.split(".")[0] in {"httpx", "requests", "psycopg", "pydantic", "orjson"}]
        print(foreign)
        """
    )
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
