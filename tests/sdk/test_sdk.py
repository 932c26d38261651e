"""The Python client against the real ingest API: nothing lost, nothing twice, never in the agent's way."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from bagula_client import BagulaClient
from tests.support.sdk import Fault, FaultyProxy, SilentServer, record_session
from tests.support.services import ApiServer, new_tenant

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
    sent: list[str] = []

    for n in range(60):
        sent.append(record_session(tracker, n))
        time.sleep(0.005)
    own_api.stop()
    for n in range(60, 140):  # produced while the API is down
        sent.append(record_session(tracker, n))
        time.sleep(0.005)
    time.sleep(0.5)
    own_api.start()
    for n in range(140, 200):
        sent.append(record_session(tracker, n))

    assert client.flush(timeout=60)
    stats = client.stats()
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent)
    assert stats["sent"] == 200 and stats["dropped"] == {} and stats["retried"] > 0
    client.close()


def test_503_and_429_are_retried_after_retry_after(api, database_url):
    tenant = new_tenant(api, database_url)

    def plan(n: int) -> Fault | None:
        if n % 3 == 1:
            return Fault(status=503, retry_after="0")
        if n % 3 == 2:
            return Fault(status=429, retry_after="1")
        return None

    with FaultyProxy(api.base_url, plan) as proxy:
        client = BagulaClient(tenant.key, proxy.url, batch_size=5, **FAST)
        tracker = client.get_session_tracker()
        sent = [record_session(tracker, n) for n in range(20)]
        started = time.monotonic()
        assert client.flush(timeout=60)
        elapsed = time.monotonic() - started

    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent)
    stats = client.stats()
    assert stats["retried"] == proxy.faults >= 8
    # Each of the four batches met one 429 asking for a one-second pause.
    assert elapsed >= 3.0
    client.close()


def test_slow_responses_time_out_and_the_resend_is_not_stored_twice(api, database_url):
    tenant = new_tenant(api, database_url)
    plan = lambda n: Fault(delay=1.5) if n % 2 == 1 else None  # noqa: E731
    with FaultyProxy(api.base_url, plan) as proxy:
        client = BagulaClient(tenant.key, proxy.url, batch_size=10, request_timeout=0.5, **FAST)
        tracker = client.get_session_tracker()
        sent = [record_session(tracker, n) for n in range(30)]
        assert client.flush(timeout=60)
        time.sleep(2)  # let the slow, abandoned requests finish upstream

    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent)
    stats = client.stats()
    assert stats["retried"] >= 3 and stats["sent"] == 30
    client.close()


def test_client_errors_are_not_retried_and_rejected_sessions_are_counted(api, database_url):
    tenant = new_tenant(api, database_url)
    client = BagulaClient(tenant.key, api.base_url, batch_size=100, **FAST)
    tracker = client.get_session_tracker()
    good = [record_session(tracker, n) for n in range(4)]
    record_session(tracker, 99, user_satisfaction=9)  # out of the 1-5 scale
    assert client.flush(timeout=30)
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(good)
    stats = client.stats()
    assert (stats["sent"], stats["rejected"], stats["retried"]) == (4, 1, 0)

    with FaultyProxy(api.base_url, lambda n: Fault(status=400)) as proxy:
        refused = BagulaClient(tenant.key, proxy.url, batch_size=100, **FAST)
        record_session(refused.get_session_tracker(), 1)
        assert refused.flush(timeout=30)
        assert proxy.requests == 1
    assert refused.stats()["dropped"] == {"client_error": 1}
    assert refused.stats()["retried"] == 0
    for c in (client, refused):
        c.close()


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
        # One batch in flight (hanging) plus a full queue; the rest dropped and counted.
        assert stats["queued"] <= 150
        assert stats["dropped"]["queue_full"] == 1000 - stats["queued"]
        assert elapsed < 2.0  # the agent never waited on the network
        closed_at = time.monotonic()
        assert client.close(timeout=0.5) is False
        assert time.monotonic() - closed_at < 3
        assert client.stats()["dropped"]["shutdown"] >= 100


def _run_script(code: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **env},
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


def test_pending_sessions_are_flushed_at_interpreter_exit(api, database_url):
    tenant = new_tenant(api, database_url)
    result = _run_script(
        """
        from bagula_client import BagulaClient
        from tests.support.sdk import record_session
        client = BagulaClient(batch_size=1000, flush_interval=3600)   # would never send by itself
        ids = [record_session(client.get_session_tracker(), n) for n in range(25)]
        print(",".join(ids))
        """,
        {"BAGULA_API_KEY": tenant.key, "BAGULA_ENDPOINT": api.base_url},
    )
    assert result.returncode == 0, result.stderr
    sent = result.stdout.strip().split(",")
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(sent)


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
        assert time.monotonic() - started < 10


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
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            ids = [record_session(tracker, 100 + n) for n in range(3)]
            ok = client.flush(timeout=30) and client.stats()["sent"] == 3
            os.write(write_end, (",".join(ids) if ok else "FAIL").encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child_report = os.read(read_end, 10_000).decode()
    os.close(read_end)
    assert child_report != "FAIL"
    assert client.flush(timeout=30)
    assert client.stats()["duplicates"] == 0  # the child did not send the parent's sessions
    assert sorted(stored_ids(database_url, tenant.project_id)) == sorted(parent_ids + child_report.split(","))
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
        ok.complete("success", user_satisfaction=4, confidence=0.8)

    with pytest.raises(ValueError):
        with tracker.session("cm-agent", "explode") as failing:
            with failing.turn("go"):
                raise ValueError("model returned garbage")

    assert client.flush(timeout=30)
    read = tenant.client.get(f"/v1/sessions/{ok.session_id}").json()
    [turn_read] = read["turns"]
    [llm] = turn_read["llmCalls"]
    assert llm["metrics"]["tokensTotal"] == 60 and llm["metrics"]["latencyMs"] >= 20
    tools = turn_read["agentResponse"]["toolCalls"]
    assert [t["toolName"] for t in tools] == ["search_orders", "get_customer"]
    assert tools[0]["error"] == "TimeoutError: upstream slow" and tools[1]["result"] == {"name": "Ada"}
    assert turn_read["agentResponse"]["message"] == "Order 42 ships tomorrow"
    assert read["finalOutcome"]["status"] == "success" and read["finalOutcome"]["userSatisfaction"] == 4

    failed = tenant.client.get(f"/v1/sessions/{failing.session_id}").json()
    assert failed["finalOutcome"]["status"] == "error"
    assert failed["finalOutcome"]["result"] == "ValueError: model returned garbage"
    client.close()


def test_misuse_is_logged_not_raised_into_the_agent(caplog):
    client = BagulaClient("bgl_x", "http://127.0.0.1:9", **FAST)
    tracker = client.get_session_tracker()
    assert tracker.start_turn("no-such-session", "x")  # still returns an id
    tracker.record_llm_call("no-such-session", "t", provider="p", model="m", start_time=1, end_time=2)
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
        from bagula_client import BagulaClient
        c = BagulaClient("k", "http://127.0.0.1:9")
        c.get_session_tracker().start_session("a", "r")
        c.close(timeout=0)
        foreign = [m for m in sys.modules if m.split(".")[0] in {"httpx", "requests", "psycopg", "pydantic", "orjson"}]
        print(foreign)
        """
    )
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
